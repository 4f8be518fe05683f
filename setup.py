from setuptools import find_packages, setup

# The shipped models live in the repository's top-level `export/` (the design
# card's layout); a wheel carries them as `lstm_stn_tf/pretrained/`, where
# `lstm_stn_tf.paths.shipped_models_dir` finds them after `pip install`.
setup(
    packages=find_packages(include=["lstm_stn_tf*"]) + ["lstm_stn_tf.pretrained"],
    package_dir={"lstm_stn_tf.pretrained": "export"},
    package_data={"lstm_stn_tf.pretrained": ["*/model.keras", "*/*.tflite", "*/*.json", "*/MODEL_CARD.md"]},
)
