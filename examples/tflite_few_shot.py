"""
Title: Few-shot classification on a device with LiteRT
Description: Meta-train a Prototypical Network on Omniglot, export it as a TFLite
prototype classifier, and let the LiteRT interpreter learn new characters from one
example each, with no retraining and no server.

Run:  python examples/tflite_few_shot.py --output-dir runs/tflite_few_shot

Expected on a 2-core CPU: under a minute in all (300 short meta-training episodes); the
interpreter's logits within 3e-5 of Keras', and about 75% 5-way 1-shot on unseen
alphabets in the interpreter, float and int8 alike (`benchmarks/results/tflite_few_shot.jsonl`).

Writes a run folder (`--output-dir`): `config.json` (settings and package versions),
`history.csv` (the meta-training loss and accuracy), `tensorboard/`, `checkpoints/` (the
learner every `--checkpoint-every` steps), the TFLite files `adapted_5way.tflite`,
`prototype_classifier.tflite` and `prototype_classifier_int8.tflite`, and `results.json`
(the largest difference between the Keras and TFLite logits, the file sizes, and the
accuracy in the interpreter).
"""

import argparse
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_meta  # noqa: E402
from keras_meta import lite  # noqa: E402
from keras_meta.data import EpisodeSampler  # noqa: E402
from keras_meta.datasets import omniglot  # noqa: E402
from keras_meta.runs import RunRecord  # noqa: E402

parser = argparse.ArgumentParser(description="Export a Prototypical Network to TFLite and classify on the device.")
parser.add_argument("--output-dir", default="runs/tflite_few_shot")
parser.add_argument("--steps", type=int, default=300, help="meta-training episodes (20-way 1-shot)")
parser.add_argument("--filters", type=int, default=64, help="conv4 filters per block")
parser.add_argument("--episodes", type=int, default=100, help="5-way 1-shot episodes classified in the interpreter")
parser.add_argument("--checkpoint-every", type=int, default=300, help="training steps between checkpoints")
args = parser.parse_args()
record = RunRecord(args.output_dir, vars(args), overwrite=True)
keras.utils.set_random_seed(0)

"""
## Meta-training

A short run on the `small1` alphabets (each rotation of a character is a class of
its own); `--steps 2000` gives a much better embedding.
"""

train, test = omniglot.unseen_alphabet_split(("small1",))
sampler = EpisodeSampler(train.images, train.labels, ways=20, shots=1, queries=5, rotations=(0, 90, 180, 270), seed=0)
learner = keras_meta.learners.PrototypicalNetwork(keras_meta.models.conv4(filters=args.filters))
learner.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
start = time.perf_counter()
learner.fit(sampler.dataset(batch_size=1), epochs=1, steps_per_epoch=args.steps, verbose=2,
            callbacks=record.callbacks(checkpoint_every=args.checkpoint_every))
train_seconds = time.perf_counter() - start
print(f"Meta-trained in {train_seconds:.0f} s")

"""
## Adapt in Keras, export, check in the interpreter

`learner.adapt` bakes the prototypes of five new characters (one drawing each, from
alphabets training never saw) into a plain Keras classifier; `lite.export_model`
turns it into a `.tflite` file, and the interpreter's logits match Keras'.
"""

rng = np.random.default_rng(0)
characters = rng.choice(np.unique(test.labels), size=5, replace=False)
support = np.stack([np.flatnonzero(test.labels == c)[0] for c in characters])
queries = np.concatenate([np.flatnonzero(test.labels == c)[1:] for c in characters])
truth = np.repeat(np.arange(5), [np.sum(test.labels == c) - 1 for c in characters])

classifier = learner.adapt(test.images[support], np.arange(5))
adapted_path = record.path("adapted_5way.tflite")
lite.export_model(classifier, adapted_path)
keras_logits = classifier.predict(test.images[queries], verbose=0)
device_logits = lite.LiteModel(adapted_path).predict(test.images[queries])
diff = float(np.max(np.abs(device_logits - keras_logits)))
print(f"Adapted classifier: {os.path.getsize(adapted_path)} bytes, max |logit difference| vs Keras {diff:.2e}")

"""
## The prototype classifier: new classes on the device

One file with three signatures. The device computes the prototypes of a support set
it has just seen (`prototypes`) and classifies new drawings against them
(`classify`); the int8 variant (calibrated on episode images) is about 3x smaller.
"""

classifier_path = record.path("prototype_classifier.tflite")
lite.export_prototype_classifier(learner, classifier_path, max_ways=20)
calibration = lite.representative_images(train.images, train.labels, num_episodes=20)
int8_path = record.path("prototype_classifier_int8.tflite")
lite.export_prototype_classifier(learner, int8_path, max_ways=20, quantize="int8", representative_data=calibration)

device = lite.LiteModel(classifier_path)
classes = device.run("prototypes", support_x=test.images[support], support_y=np.arange(5))
logits = device.run("classify", x=test.images[queries], **classes)["logits"]
new_characters = float(np.mean(logits.argmax(-1) == truth))
print(f"On the device, one drawing per character: {new_characters:.2%} of the other {len(queries)} drawings right")

results = {"max_logit_diff_vs_keras": diff, "max_abs_logit": float(np.max(np.abs(keras_logits))),
           "size_bytes": os.path.getsize(classifier_path), "size_bytes_int8": os.path.getsize(int8_path),
           "size_bytes_adapted": os.path.getsize(adapted_path), "device_accuracy_new_characters": new_characters,
           "train_seconds": round(train_seconds, 1)}
episodes = EpisodeSampler(test.images, test.labels, ways=5, shots=1, queries=5, seed=1)
for name, path in [("", classifier_path), ("_int8", int8_path)]:
    device, correct = lite.LiteModel(path), []
    for inputs, labels in episodes.dataset(batch_size=1, num_episodes=args.episodes):
        classes = device.run("prototypes", support_x=inputs["support_x"][0], support_y=inputs["support_y"][0])
        predicted = device.run("classify", x=inputs["query_x"][0], **classes)["logits"].argmax(-1)
        correct.append(np.mean(predicted == labels[0].numpy()))
    results[f"device_accuracy_5w1s{name}"] = float(np.mean(correct))
print(f"5-way 1-shot accuracy in the interpreter over {args.episodes} episodes: "
      f"float32 {results['device_accuracy_5w1s']:.2%} ({results['size_bytes'] / 1024:.0f} KiB), "
      f"int8 {results['device_accuracy_5w1s_int8']:.2%} ({results['size_bytes_int8'] / 1024:.0f} KiB)")

results_path = record.write_results(results)
print("\nWritten:")
for label, path in [("run folder", args.output_dir), ("adapted classifier", adapted_path),
                    ("prototype classifier", classifier_path), ("int8 prototype classifier", int8_path),
                    ("results", results_path)]:
    print(f"  {label:26s} {os.path.abspath(path)}")
