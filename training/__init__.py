"""tf.distribute training for keras_coatnet: `python -m training.train --help`.

`training.train.run(config) -> dict` is the Python entry point (see the Training section of README.md).
"""
