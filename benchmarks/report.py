"""The tables of docs/ rendered from the results files of `benchmarks/results/`.

A table lives between `<!-- report: NAME -->` and `<!-- /report -->` in a Markdown
page; this script replaces what is between the two with the table NAME rendered
from the latest recorded lines, followed by the command, date, commit and CPU
each table came from. Prints one JSON line: the tables it wrote.

    python benchmarks/report.py            # rewrite the tables of the pages
    python benchmarks/report.py --check    # exit 1 when a table differs from its results file
"""

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from recording import DEFAULT_DIR, OUTPUT_OPTIONS, read, run_options  # noqa: E402

PAGES = [os.path.join(ROOT, "docs", page) for page in ("benchmarks.md", "deploying.md", "gradient_based_learners.md")]
BLOCK = re.compile(r"(<!-- report: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /report -->)", re.S)
ALGO_ORDER = ["protonet", "matching", "r2d2", "metanet", "metanet-embedding", "maml", "mamlpp", "fomaml", "metasgd",
              "anil", "imaml", "reptile", "finetune", "finetune-cosine"]
WORKLOAD_NAMES = {"maml_k1": "MAML 2nd order, 1 inner step, 5w1s q15, 32 tasks",
                  "maml_k5": "MAML 2nd order, 5 inner steps", "maml_k10": "MAML 2nd order, 10 inner steps",
                  "maml_k10_recompute": "MAML 2nd order, 10 inner steps, recomputed",
                  "fomaml_k1": "first-order MAML, 1 inner step", "protonet": "ProtoNet 20w5s q15, 1 episode"}


def source(line):
    """Where a table's numbers came from: its command, date, commit and CPU."""
    parts = [f"`{line['command']}`" if line.get("command") else None, line.get("date"),
             f"commit {line['commit']}" if line.get("commit") else None, line.get("cpu")]
    return "Source: " + ", ".join(part for part in parts if part) + "."


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def percent(line, key):
    if key not in line:
        return "-"
    ci = line.get(key.replace("acc_", "ci95_"))
    return f"{100 * line[key]:.2f}%" + (f" ± {100 * ci:.2f}" if ci is not None else "")


def latest(lines, key):
    """The newest line of each value of `key(line)`, in the order the values first appeared."""
    newest = {}
    for line in lines:
        newest[key(line)] = line
    return list(newest.values())


def omniglot_table(results_dir):
    def command(line):  # the options of omniglot.py that made the run
        options = run_options(line, OUTPUT_OPTIONS + ("--algo",))
        return " ".join(part for part in (f"--algo {line['algo']}", options) if part)

    def rank(line):
        algo = line["algo"]
        return (ALGO_ORDER.index(algo) if algo in ALGO_ORDER else len(ALGO_ORDER), -line.get("acc_5w1s", 0))

    lines = [line for line in read("omniglot", results_dir)
             if line.get("onednn") and "acc_5w1s" in line and line.get("eval_episodes", 600) == 600]
    rows = [(f"`{command(line)}`", percent(line, "acc_5w1s"), percent(line, "acc_20w1s"), percent(line, "acc_5w5s"),
             line["train_steps"],
             line["train_seconds"], line["cpu"] if "AVX" in line.get("cpu", "") else "2 cores, not recorded")
            for line in sorted(latest(lines, command), key=rank)]
    header = ("command (`python benchmarks/omniglot.py` and these options)", "5-way 1-shot", "20-way 1-shot",
              "5-way 5-shot", "training steps", "training time (s)", "CPU")
    return markdown_table(header, rows)


def sine_table(results_dir):
    lines = latest(read("sine", results_dir), lambda line: line.get("command"))
    rows = [(f"`{line['command']}`", line["train_steps"], line["train_inner_steps"],
             "yes" if line["multi_step_loss"] else "no", len(line.get("seeds", [0])), line["mse_0step"],
             line["mse_1step"], line["mse_5step"], line["mse_10step"], line["train_seconds"]) for line in lines]
    header = ("command", "training steps", "inner steps", "multi-step loss", "training runs (mean)", "MSE, 0 steps",
              "1 step", "5 steps", "10 steps", "training time per run (s)")
    return markdown_table(header, rows) + "\n\n" + "\n".join(source(line) for line in lines)


def newest(name, results_dir, has):
    lines = [line for line in read(name, results_dir) if has(line)]
    if not lines:
        raise SystemExit(f"benchmarks/report.py: no line of {name}.jsonl has what the table needs; run the "
                         "benchmark first.")
    return lines[-1]


def workloads(line, suffix):
    return [name for name in WORKLOAD_NAMES if f"{name}_{suffix}" in line]


def unit(line, name):
    return "episodes_per_s" if f"{name}_episodes_per_s" in line else "tasks_per_s"


def throughput_table(results_dir):
    line = newest("throughput", results_dir, lambda r: any(k.endswith("_vs_learn2learn") for k in r)
                  and r.get("parallel_tasks") == "auto" and r.get("intra_op_threads") == 2)  # no flags
    rows = []
    for name in workloads(line, "vs_learn2learn"):
        u = unit(line, name)
        rounds = ", ".join(f"{r:.2f}" for r in line.get(f"{name}_vs_learn2learn_runs", []))
        rows.append((WORKLOAD_NAMES[name], f"{line[f'{name}_{u}']:.2f}", f"{line[f'{name}_learn2learn_{u}']:.2f}",
                     f"**{line[f'{name}_vs_learn2learn']:.2f}** ({rounds})",
                     f"{line[f'{name}_peak_anon_mb']} / {line[f'{name}_learn2learn_peak_anon_mb']}",
                     f"{line[f'{name}_peak_rss_mb']} / {line[f'{name}_learn2learn_peak_rss_mb']}"))
    header = ("workload", "keras-meta (tasks/s; ProtoNet: episodes/s)", "learn2learn (the same)",
              "ratio of the medians (each round's)",
              "peak anonymous memory (MiB), keras-meta / learn2learn", "peak RSS (MiB), keras-meta / learn2learn")
    settings = (f"{line['repeats']} alternating rounds, no flags: {line['intra_op_threads']} threads per op, "
                f"the MAML workloads {line['parallel_tasks_at_once']} tasks at a time (`parallel_tasks=\"auto\"`).")
    return markdown_table(header, rows) + "\n\n" + settings + " " + source(line)


def inner_steps_memory_table(results_dir):
    line = newest("throughput", results_dir, lambda r: "maml_k10_recompute_tasks_per_s" in r)
    rows = [(WORKLOAD_NAMES[name], f"{line[f'{name}_tasks_per_s']:.2f}", line[f"{name}_tensors_peak_mb"],
             line[f"{name}_peak_anon_mb"]) for name in workloads(line, "tensors_peak_mb") if name != "protonet"]
    header = ("workload", "tasks/s", "TensorFlow's tensor peak (MiB)", "peak anonymous memory (MiB)")
    ratio = line.get("maml_k10_recompute_tensors_peak_vs_maml_k1")
    note = f"Tensor peak of 10 recomputed steps over that of 1 plain step: {ratio}. " if ratio is not None else ""
    note += f"{line.get('parallel_tasks_at_once', 1)} task(s) at a time. "  # lines without it: before "auto"
    return markdown_table(header, rows) + "\n\n" + note + source(line)


def baseline_table(results_dir):
    line = newest("throughput", results_dir, lambda r: any(k.endswith("_vs_baseline") for k in r))
    rows = []
    for name in workloads(line, "vs_baseline"):
        u = unit(line, name)
        runs = line.get(f"{name}_vs_baseline_runs", [])
        rows.append((WORKLOAD_NAMES[name], f"{line[f'{name}_{u}']:.2f}", f"{line[f'{name}_baseline_{u}']:.2f}",
                     f"{line[f'{name}_vs_baseline']:.3f}", f"{min(runs):.2f}-{max(runs):.2f}" if runs else "-"))
    header = ("workload", "this version (tasks/s)", "baseline (tasks/s)", "ratio (median)", "rounds")
    command = line.get("command") or f"python benchmarks/throughput.py {line.get('options', '')}".strip()
    return markdown_table(header, rows) + "\n\n" + source(dict(line, command=command))


def distributed_table(results_dir):
    line = newest("distributed", results_dir, lambda r: True)
    names = {"protonet": "ProtoNet 20w5s q15", "maml": "MAML 2nd order, 1 inner step, 5w1s q15"}
    configs = {"one_device": "1 replica", "mirrored": "2 replicas, 1 process", "multi_worker": "2 workers"}
    rows = []
    for name, label in names.items():
        for config, config_label in configs.items():
            key = f"{name}_{config}"
            if f"{key}_tasks_per_s" not in line:
                continue
            efficiency = line.get(f"{key}_scaling_efficiency", "-")
            rows.append((f"{label} ({line[f'{name}_batch']} per step)", config_label,
                         f"{line[f'{key}_tasks_per_s']:.2f}", efficiency, line[f"{key}_peak_rss_mb"],
                         line[f"{key}_peak_anon_mb"]))
    header = ("workload (global batch)", "configuration", "tasks/s", "scaling efficiency", "peak RSS (MiB)",
              "peak anonymous memory (MiB)")
    return markdown_table(header, rows) + "\n\n" + source(line)


def lite_table(results_dir):
    line = newest("lite", results_dir, lambda r: "protonet" in r)
    rows = []
    for learner, agreement in (("protonet", "agreement_vs_keras"), ("maml", "agreement_vs_float")):
        for variant, row in line[learner].items():
            latency = f"{row['latency_ms']:.2f}" + (f" (`adapt`: {row['adapt_latency_ms']:.2f})"
                                                    if "adapt_latency_ms" in row else "")
            rows.append((learner, variant, f"{row['size_bytes'] / 1024:.0f}", latency,
                         f"{100 * row['accuracy']:.2f}%", f"{100 * row[agreement]:.2f}%"))
    header = ("file", "variant", "size (KiB)", "latency (ms per image; MAML: and per `adapt` call)",
              "5-way 1-shot accuracy",
              "argmax agreement (ProtoNet: with Keras; MAML: with the float32 file)")
    keras_accuracy = (f"Keras: ProtoNet {100 * line['protonet_acc_keras']:.2f}%, MAML adapting all layers "
                      f"{100 * line['maml_acc_keras_all_layers']:.2f}%; on device MAML adapts the "
                      f"{line['maml_on_device']}; {line['episodes']} episodes.")
    return markdown_table(header, rows) + "\n\n" + keras_accuracy + " " + source(line)


def parallel_tasks_table(results_dir):
    """Tasks/s of the MAML workloads one task at a time, with the default (a task per core) and that with one
    thread per op, each from the newest line of this code's measurements that has it."""
    def maml_line(parallel_tasks, threads):
        return lambda r: (r.get("parallel_tasks") == parallel_tasks and r.get("intra_op_threads") == threads
                          and "maml_k1_tasks_per_s" in r and "maml_k1_baseline_tasks_per_s" not in r)

    default = newest("throughput", results_dir, maml_line("auto", 2))
    one_at_a_time = newest("throughput", results_dir, maml_line(1, 2))
    one_thread = newest("throughput", results_dir, maml_line("auto", 1))
    at_once = default["parallel_tasks_at_once"]
    rows = [(WORKLOAD_NAMES[name], f"{one_at_a_time[f'{name}_tasks_per_s']:.2f}",
             f"{default[f'{name}_tasks_per_s']:.2f}", f"{one_thread[f'{name}_tasks_per_s']:.2f}",
             one_at_a_time[f"{name}_peak_anon_mb"], default[f"{name}_peak_anon_mb"])
            for name in workloads(one_thread, "tasks_per_s")
            if f"{name}_tasks_per_s" in default and f"{name}_tasks_per_s" in one_at_a_time]
    header = ("workload", "tasks/s, `parallel_tasks=1`", f"tasks/s, `\"auto\"` (the default: {at_once} at once)",
              "tasks/s, `\"auto\"` and 1 thread per op", "peak anonymous memory (MiB), `parallel_tasks=1`",
              "the same, `\"auto\"`")
    return markdown_table(header, rows) + "\n\n" + "\n".join(
        f"{column}: {source(line)}" for column, line in
        (("One at a time", one_at_a_time), ("Default", default), ("One thread per op", one_thread)))


TABLES = {"omniglot": omniglot_table, "sine": sine_table, "throughput": throughput_table,
          "inner-steps-memory": inner_steps_memory_table, "throughput-baseline": baseline_table,
          "distributed": distributed_table, "lite": lite_table, "parallel-tasks": parallel_tasks_table}


def render(text, results_dir):
    """`text` with every report block re-rendered; also the names of the blocks."""
    names = []

    def replace(match):
        name = match.group("name")
        if name not in TABLES:
            raise SystemExit(f"benchmarks/report.py: unknown table {name!r}; known: {sorted(TABLES)}")
        names.append(name)
        return match.group(1) + TABLES[name](results_dir) + "\n" + match.group(4)

    return BLOCK.sub(replace, text), names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is out of date")
    parser.add_argument("--results-dir", default=DEFAULT_DIR)
    parser.add_argument("pages", nargs="*", default=PAGES, help="Markdown pages with report blocks")
    args = parser.parse_args(argv)
    stale, written = [], []
    for page in args.pages:
        with open(page) as f:
            text = f.read()
        new_text, names = render(text, args.results_dir)
        written += [f"{os.path.relpath(page, ROOT)}:{name}" for name in names]
        if new_text != text:
            stale.append(os.path.relpath(page, ROOT))
            if not args.check:
                with open(page, "w") as f:
                    f.write(new_text)
    print(json.dumps({"tables": written, "changed" if not args.check else "stale": stale}))
    if args.check and stale:
        sys.exit(1)


if __name__ == "__main__":
    main()
