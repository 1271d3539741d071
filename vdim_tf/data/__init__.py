"""Dataset preparation, TFRecord layout, view generation, augmentation and input pipelines."""
