"""The data layer (a leaf: imports nothing from the model, training, simulators or the report):
episodes and action specs, the LeRobot v3.0 on-disk format, split layout, windows and batches,
normalisers, augmentation and paraphrases."""
