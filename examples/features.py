"""CoAtNet as a backbone: pooled features (include_top=False, pooling="avg") + a logistic regression on digits.

    python -m examples.features                                  # random-init backbone
    python -m examples.features --weights runs/<demo>/best.keras # the backbone of a trained model

Prints the feature shape and the test accuracy of a scikit-learn logistic regression on the features,
next to the same classifier on the raw 8x8 pixels. --weights: a .keras model (its backbone is used),
a Keras .weights.h5 or a timm .safetensors of the same model and input size.
"""

import argparse
import sys

import numpy as np

from examples.cli import Steps, run_main

PROG = "python -m examples.features"


def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                epilog="\n".join(__doc__.splitlines()[2:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="coatnet_micro", help="keras_coatnet model name (default coatnet_micro)")
    p.add_argument("--image-size", type=int, default=32, help="input size, a multiple of 32 (default 32)")
    p.add_argument("--weights", default=None, help=".keras / .weights.h5 / .safetensors (default: random init)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N train and N test images")
    p.add_argument("--batch-size", type=int, default=64, help="feature extraction batch (default 64)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return p


def backbone(model_name, image_size, weights=None):
    """create_model(include_top=False, pooling="avg"): (B, S, S, 3) 0-255 RGB -> (B, C) features."""
    import keras_coatnet

    shape = (image_size, image_size, 3)
    if weights is None or not str(weights).endswith(".keras"):
        return keras_coatnet.create_model(model_name, include_top=False, pooling="avg", input_shape=shape,
                                          weights=weights)
    import keras

    from training.model import transfer_weights

    net = keras_coatnet.create_model(model_name, include_top=False, pooling="avg", input_shape=shape)
    if not transfer_weights(keras.models.load_model(weights, compile=False), net):
        raise ValueError(f"--weights {weights}: no layer of {model_name} at {image_size}x{image_size} matched it")
    return net


def digits_images(image_size, limit=None):
    """((x_train, y_train), (x_test, y_test)): the fixed digits split as (N, S, S, 3) 0-255 RGB and 8x8 pixels."""
    import tensorflow as tf

    from keras_coatnet.data_files import digits_arrays

    splits = []
    for x, y in digits_arrays():
        x, y = x[:limit], y[:limit]
        rgb = tf.image.resize(np.repeat(x, 3, axis=-1), (image_size, image_size), method="bilinear").numpy()
        splits.append((rgb, x.reshape(len(x), -1), y))
    return splits


def logistic_accuracy(train_x, train_y, test_x, test_y):
    """Test accuracy of a standardized logistic regression fitted on (train_x, train_y)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(train_x, train_y)
    return float(clf.score(test_x, test_y))


def run(args):
    """Returns {'feature_shape', 'feature_accuracy', 'pixel_accuracy', 'train_images', 'test_images'}."""
    if args.limit is not None and args.limit < 20:
        raise ValueError(f"--limit {args.limit} must be at least 20 (every digit class needs examples)")
    if args.image_size < 32 or args.image_size % 32:
        raise ValueError(f"--image-size {args.image_size} must be a multiple of 32")
    steps = Steps(3)
    steps.start(f"building the {args.model} backbone (include_top=False, pooling='avg')")
    net = backbone(args.model, args.image_size, args.weights)
    steps.log(f"{net.count_params():,} parameters, output {tuple(net.output.shape)}")
    steps.start("extracting features of the digits train and test images")
    (tr_rgb, tr_px, tr_y), (te_rgb, te_px, te_y) = digits_images(args.image_size, args.limit)
    verbose = 1 if sys.stdout.isatty() else 0
    tr_f = net.predict(tr_rgb, batch_size=args.batch_size, verbose=verbose)
    te_f = net.predict(te_rgb, batch_size=args.batch_size, verbose=verbose)
    steps.log(f"features: train {tr_f.shape}, test {te_f.shape}")
    steps.start("fitting logistic regressions")
    out = {"feature_shape": list(te_f.shape), "train_images": len(tr_y), "test_images": len(te_y),
           "feature_accuracy": logistic_accuracy(tr_f, tr_y, te_f, te_y),
           "pixel_accuracy": logistic_accuracy(tr_px, tr_y, te_px, te_y)}
    print(f"\nlogistic regression on {len(te_y)} test digits:\n"
          f"  CoAtNet features ({te_f.shape[1]}-d): {out['feature_accuracy']:.1%}\n"
          f"  raw 8x8 pixels (64-d):     {out['pixel_accuracy']:.1%}", flush=True)
    return out


def main(argv=None):
    return run_main(PROG, build_parser(), lambda args: run(args) and 0, argv)


if __name__ == "__main__":
    sys.exit(main())
