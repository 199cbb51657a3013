"""Runnable examples of keras_coatnet; each is a small CLI (``python -m examples.NAME --help``).

demo             train on digits, export fp32 + int8 TFLite, validate, benchmark, report (``make demo``)
finetune_folder  fine-tune on an image folder (optionally from pretrained weights, frozen backbone)
features         CoAtNet as a backbone: pooled features + a scikit-learn classifier on digits
tflite_predict   run an int8 .tflite on an image file as a phone app would (uint8 in, top-5 labels out)
"""
