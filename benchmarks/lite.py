"""Edge deployment on Omniglot: file size, interpreter latency and accuracy of each TFLite variant.

Meta-trains (or loads) a Prototypical Network and a MAML model on `small1`, then
for each variant (float32, float16, dynamic range, int8 calibrated on episode
images) writes:

* the ProtoNet prototype classifier (`prototypes` + `classify` on the device);
* the MAML on-device file (`adapt`: SGD steps on the head with the
  meta-learned inner learning rate, then `infer`),

and measures in the LiteRT interpreter: file size, single-image latency
(`classify` / `infer` on one image, median), accuracy over fixed 5-way 1-shot
episodes of the held-out alphabets, and argmax agreement with the float model
(ProtoNet: the Keras learner's logits; MAML: the float32 file, which matches
TensorFlow's head adaptation). Prints one JSON line.

    python benchmarks/lite.py                          # ProtoNet 300 steps, MAML 150 steps
    python benchmarks/lite.py --protonet runs/protonet.keras --maml runs/maml.keras --episodes 600
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_meta  # noqa: E402
from keras_meta import lite  # noqa: E402
from keras_meta.data import EpisodeSampler  # noqa: E402
from keras_meta.datasets import omniglot  # noqa: E402
from keras_meta.evaluation import evaluate_few_shot  # noqa: E402

from recording import add_results_argument, record  # noqa: E402

ROTATIONS = (0, 90, 180, 270)
VARIANTS = (None, "float16", "dynamic", "int8")
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_results_argument(parser)
    parser.add_argument("--steps", type=int, help="meta-training steps of both learners (default: ProtoNet 300, "
                                                  "MAML 150)")
    parser.add_argument("--protonet", help="a saved PrototypicalNetwork (.keras) instead of training one")
    parser.add_argument("--maml", help="a saved MAML-family learner (.keras) instead of training one")
    parser.add_argument("--meta-batch", type=int, default=4, help="MAML tasks per meta-batch")
    parser.add_argument("--episodes", type=int, default=100, help="5-way 1-shot evaluation episodes")
    parser.add_argument("--calibration-episodes", type=int, default=20)
    parser.add_argument("--latency-repeats", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=0, help="Keras verbosity of training")
    return parser.parse_args()


def train_protonet(train, steps, args):
    learner = keras_meta.learners.PrototypicalNetwork(keras_meta.models.conv4())
    learner.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS)
    sampler = EpisodeSampler(train.images, train.labels, ways=20, shots=1, queries=5, rotations=ROTATIONS,
                             seed=args.seed)
    learner.fit(sampler.dataset(batch_size=1), epochs=1, steps_per_epoch=steps, verbose=args.verbose)
    return learner


def train_maml(train, steps, args):
    learner = keras_meta.learners.MAML(keras_meta.models.conv4(num_classes=5), inner_learning_rate=0.4,
                                       inner_steps=1, eval_inner_steps=3)
    learner.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS)
    sampler = EpisodeSampler(train.images, train.labels, ways=5, shots=1, queries=5, rotations=ROTATIONS,
                             seed=args.seed)
    learner.fit(sampler.dataset(batch_size=args.meta_batch), epochs=1, steps_per_epoch=steps, verbose=args.verbose)
    return learner


def episodes(test, args):
    sampler = EpisodeSampler(test.images, test.labels, ways=5, shots=1, queries=15, seed=args.seed + 1)
    return [({k: v.numpy() for k, v in inputs.items()}, labels.numpy())
            for inputs, labels in sampler.dataset(batch_size=1, num_episodes=args.episodes)]


def protonet_variants(learner, tasks, calibration, directory, args):
    results = {}
    references = [learner.predict_on_batch(inputs)[0] for inputs, _ in tasks]
    for quantize in VARIANTS:
        name = quantize or "float32"
        path = os.path.join(directory, f"protonet_{name}.tflite")
        lite.export_prototype_classifier(learner, path, max_ways=20, quantize=quantize,
                                         representative_data=calibration)
        device = lite.LiteModel(path, num_threads=1)
        correct, agree, classes = [], [], None
        for (inputs, labels), reference in zip(tasks, references, strict=True):
            classes = device.run("prototypes", support_x=inputs["support_x"][0], support_y=inputs["support_y"][0])
            predicted = device.run("classify", x=inputs["query_x"][0], **classes)["logits"][:, :5].argmax(-1)
            correct.append(np.mean(predicted == labels[0]))
            agree.extend(predicted == reference.argmax(-1))
        latency = device.latency("classify", repeats=args.latency_repeats, x=tasks[0][0]["query_x"][0][:1], **classes)
        results[name] = {"size_bytes": os.path.getsize(path), "latency_ms": round(1000 * latency, 3),
                         "accuracy": round(float(np.mean(correct)), 4),
                         "agreement_vs_keras": round(float(np.mean(agree)), 4)}
    return results


def maml_variants(learner, tasks, calibration, directory, args):
    results, float_predictions = {}, None
    for quantize in VARIANTS:
        name = quantize or "float32"
        path = os.path.join(directory, f"maml_{name}.tflite")
        lite.export_on_device_learner(learner, path, quantize=quantize, representative_data=calibration)
        device = lite.LiteModel(path, num_threads=1)
        correct, predictions = [], []
        for inputs, labels in tasks:
            device.run("adapt", support_x=inputs["support_x"][0], support_y=inputs["support_y"][0])
            predicted = device.run("infer", x=inputs["query_x"][0])["logits"].argmax(-1)
            correct.append(np.mean(predicted == labels[0]))
            predictions.append(predicted)
        predictions = np.concatenate(predictions)
        if float_predictions is None:
            float_predictions = predictions
        latency = device.latency("infer", repeats=args.latency_repeats, x=tasks[0][0]["query_x"][0][:1])
        adapt_latency = device.latency("adapt", repeats=max(1, args.latency_repeats // 10),
                                       support_x=tasks[0][0]["support_x"][0], support_y=tasks[0][0]["support_y"][0])
        results[name] = {"size_bytes": os.path.getsize(path), "latency_ms": round(1000 * latency, 3),
                         "adapt_latency_ms": round(1000 * adapt_latency, 3),
                         "accuracy": round(float(np.mean(correct)), 4),
                         "agreement_vs_float": round(float(np.mean(predictions == float_predictions)), 4)}
    return results


def main():
    args = parse_args()
    keras.utils.set_random_seed(args.seed)
    train, test = omniglot.unseen_alphabet_split(("small1",))
    results = {"episodes": args.episodes, "test_alphabets": sorted(set(test.alphabets.tolist()))}
    start = time.perf_counter()
    if args.protonet:
        protonet = keras.saving.load_model(args.protonet)
    else:
        protonet = train_protonet(train, args.steps or 300, args)
        results["protonet_train_steps"] = args.steps or 300
    if args.maml:
        maml = keras.saving.load_model(args.maml)
    else:
        maml = train_maml(train, args.steps or 150, args)
        results["maml_train_steps"] = args.steps or 150
    results["train_seconds"] = round(time.perf_counter() - start, 1)

    tasks = episodes(test, args)
    calibration = lite.representative_images(train.images, train.labels, num_episodes=args.calibration_episodes,
                                             rotations=ROTATIONS, seed=args.seed + 2)
    score = evaluate_few_shot(protonet, test.images, test.labels, 5, shots=1, queries=15,
                              num_episodes=args.episodes, seed=args.seed + 1, verbose=0)
    results["protonet_acc_keras"] = round(score.accuracy, 4)
    score = evaluate_few_shot(maml, test.images, test.labels, 5, shots=1, queries=15, num_episodes=args.episodes,
                              seed=args.seed + 1, verbose=0)
    results["maml_acc_keras_all_layers"] = round(score.accuracy, 4)
    results["maml_on_device"] = f"head only, {maml.eval_inner_steps} steps, inner lr {maml.inner_learning_rate}"
    with tempfile.TemporaryDirectory() as directory:
        results["protonet"] = protonet_variants(protonet, tasks, calibration, directory, args)
        results["maml"] = maml_variants(maml, tasks, calibration, directory, args)
    print(json.dumps(record("lite", results, args.results_dir)))


if __name__ == "__main__":
    main()
