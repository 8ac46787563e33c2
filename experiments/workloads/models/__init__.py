"""Model families of the suite behind one function, ``build_model(config, input_shape, num_classes)``.

Names resolve through :mod:`experiments.workloads.models.registry`: the built-in families, names registered with
:func:`register_model`, and import paths ``"my_pkg.models:build_net"`` (the builder's signature is
documented there).
"""

from experiments.workloads.models.registry import (
    BUILTIN_MODELS,
    ModelBuilder,
    available_models,
    build_model,
    model_builder,
    register_model,
)

__all__ = ["BUILTIN_MODELS", "ModelBuilder", "available_models", "build_model", "model_builder", "register_model"]
