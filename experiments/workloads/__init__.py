"""What a workload is: its config (:mod:`.config`, the JSON files here), data (:mod:`.data`), models
(:mod:`.models`) and learning-rate schedule (:mod:`.schedule`)."""
