"""Pretraining clips/s of this checkout next to an earlier revision, measured in one run.

What a user runs, end to end: `python -m vdim_tf.launch.pretrain` with the revision's own
`configs/demo_pretrain.cfg`, on real video prepared once by the motion benchmark from
`../shared/data` (frames stored at `--short_side`, 128 by default as `prepare`'s), with the
paper's views (view 2 at offset 0, factor 2). Everything a user feels is in the figure: the
input pipeline decoding and augmenting on the same cores, the train step, the metrics and the
progress bar.

Each run takes 2·`--steps` steps and logs every `--steps`; the figure is the loop's own
`clips_per_second` of the second log, i.e. the steady state after tracing and warm-up. Rounds
interleave the revisions and batch sizes, so the drift of a shared machine hits all of them
alike; the table gives the median over rounds and the ratio to the baseline.

The baseline is checked out with `git worktree add --detach` into a temporary folder and run with
this interpreter (same TensorFlow). Flags given to both: encoder, batch, data, views, steps, logging,
precision; the rest is each revision's flagfile.

    python bench/pretrain_throughput.py --baseline REV [--batches 8,16,32] [--steps 40] [--rounds 2]
                                        [--current_flags "--precision=mixed_bfloat16"] [--out DIR]
"""

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.evidence import build_motion  # noqa: E402
THROUGHPUT = re.compile(r"clips_per_second=([0-9.]+)")


def checkout(revision, folder):
    """`revision` checked out (detached) into `folder`; returns the commit it resolved to."""
    known = subprocess.run(["git", "-C", REPO, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
                           capture_output=True, text=True)
    if known.returncode:
        sys.exit(f"--baseline={revision}: not a commit of {REPO} (give a hash, tag, branch or e.g. HEAD~3)")
    subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", "--quiet", folder, revision], check=True)
    return subprocess.run(["git", "-C", folder, "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def clips_per_second(source, data, batch, steps, model_dir, extra):
    """Steady-state clips/s of one pretraining run of the checkout at `source`."""
    command = [
        sys.executable, "-m", "vdim_tf.launch.pretrain", "--flagfile=configs/demo_pretrain.cfg",
        "--encoder=cpu", f"--train_data={os.path.join(data, 'train', '*.tfrecord')}", f"--batch_size={batch}",
        "--view2_offset=0", "--view2_factor=2", f"--train_steps={2 * steps}", f"--log_every={steps}",
        f"--checkpoint_every={2 * steps}", f"--model_dir={model_dir}", *extra,
    ]
    env = {**os.environ, "PYTHONPATH": source, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True)
    found = THROUGHPUT.findall(result.stdout + result.stderr)
    if result.returncode or len(found) < 2:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"pretraining in {source} (batch {batch}) failed or logged no throughput:\n{tail}")
    return float(found[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision to compare with (e.g. HEAD~3, a tag)")
    parser.add_argument("--batches", default="8,16,32", help="comma-separated batch sizes, clips (default 8,16,32)")
    parser.add_argument("--steps", type=int, default=40,
                        help="steps measured per run, after as many warm-up steps (default 40)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is reported (default 2)")
    parser.add_argument("--short_side", type=int, default=128,
                        help="stored frame size of the benchmark data, px (default 128, as prepare's)")
    parser.add_argument("--current_flags", default="", help="extra pretrain flags for this checkout only")
    parser.add_argument("--out", default=None, help="folder for throughput.json (default: a temporary folder)")
    args = parser.parse_args()
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error(f"--batches={args.batches}: give comma-separated integers, e.g. 8,16,32")

    with tempfile.TemporaryDirectory(prefix="vdim_throughput_") as tmp:
        out = args.out or tmp
        os.makedirs(out, exist_ok=True)
        data = os.path.join(tmp, "data")
        build_motion(data, args.short_side)
        baseline_dir = os.path.join(tmp, "baseline")
        commit = checkout(args.baseline, baseline_dir)
        current = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True).stdout.strip())
        sources = {"baseline": (baseline_dir, []), "current": (REPO, shlex.split(args.current_flags))}
        figures = {(name, b): [] for name in sources for b in batches}
        try:
            for r in range(args.rounds):
                for b in batches:
                    for name, (source, extra) in sources.items():
                        start = time.perf_counter()
                        value = clips_per_second(source, data, b, args.steps, os.path.join(tmp, f"run_{name}_{b}_{r}"),
                                                 extra)
                        figures[(name, b)].append(value)
                        print(f"round {r + 1}/{args.rounds} batch {b:>3} {name:<8} {value:7.1f} clips/s "
                              f"({time.perf_counter() - start:.0f} s)", flush=True)
        finally:
            subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", baseline_dir], check=False)

        current_name = f"{current}{' + uncommitted changes' if dirty else ''}"
        print(f"\nbaseline {args.baseline} ({commit}) vs current {current_name}"
              f"{' with ' + args.current_flags if args.current_flags else ''}; median of {args.rounds} round(s), "
              f"{args.steps} steps after {args.steps} warm-up steps, {os.cpu_count()} CPU cores")
        print("| batch | baseline clips/s | current clips/s | current / baseline |")
        print("|---|---|---|---|")
        rows = []
        for b in batches:
            base, cur = statistics.median(figures[("baseline", b)]), statistics.median(figures[("current", b)])
            rows.append(dict(batch=b, baseline=base, current=cur, ratio=cur / base,
                             baseline_runs=figures[("baseline", b)], current_runs=figures[("current", b)]))
            print(f"| {b} | {base:.1f} | {cur:.1f} | {cur / base:.2f}× |")
        with open(os.path.join(out, "throughput.json"), "w") as f:
            json.dump(dict(baseline=args.baseline, baseline_commit=commit, current=current_name,
                           current_flags=args.current_flags, steps=args.steps, rounds=args.rounds,
                           short_side=args.short_side, rows=rows), f, indent=2)
        if args.out:
            print(f"figures in {os.path.join(out, 'throughput.json')}")


if __name__ == "__main__":
    main()
