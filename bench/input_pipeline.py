"""Input-pipeline throughput: clips/s of `pretrain_dataset` next to the JPEG-decode ceiling.

Writes temporary records (160x128 frames, 100 frames per video), then measures, in one run:
  - decode ceiling: `tf.io.decode_jpeg` of the same frames in a parallel tf.data map, converted to
    clips/s by dividing by the distinct frames one clip decodes;
  - `pretrain_dataset` for the paper setting (two views of 32 frames, view 2 downsampled by 2,
    128x128) and the CPU preset (16 frames, 64x64), full augmentation;
  - the rate at which the matching train step (float32, views already in memory) consumes clips,
    so the pipeline's headroom over training is one ratio from one run.

    python bench/input_pipeline.py [--seconds 15] [--batch_size 8] [--videos 24] [--train_steps 3]
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vdim_tf.data import pipeline
from vdim_tf.data.augment import AugmentConfig
from vdim_tf.data.records import make_sequence_example
from vdim_tf.data.views import ViewConfig

FRAME_HEIGHT, FRAME_WIDTH, FRAMES_PER_VIDEO = 128, 160, 100


def _video_frames(rng):
    """JPEG frames of a moving smooth pattern plus noise (compresses like real video, not like noise)."""
    y, x = np.mgrid[0:FRAME_HEIGHT, 0:FRAME_WIDTH].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    frames = []
    for t in range(FRAMES_PER_VIDEO):
        channels = [np.sin(x / 13.0 + y / 17.0 + 0.1 * t + p) for p in phase]
        image = 127.5 + 100 * np.stack(channels, -1) + rng.normal(0, 8, (FRAME_HEIGHT, FRAME_WIDTH, 3))
        frames.append(tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=90).numpy())
    return frames


def write_records(folder, num_videos, num_files=4):
    rng = np.random.default_rng(0)
    writers = [tf.io.TFRecordWriter(os.path.join(folder, f"bench-{i}.tfrecord")) for i in range(num_files)]
    all_frames = []
    for v in range(num_videos):
        frames = _video_frames(rng)
        all_frames += frames
        example = make_sequence_example(frames, v % 10, f"class{v % 10}", f"video{v}.avi", 25.0)
        writers[v % num_files].write(example.SerializeToString())
    for writer in writers:
        writer.close()
    return os.path.join(folder, "bench-*.tfrecord"), all_frames


def _rate(iterator, items_per_element, seconds):
    """(items/s, CPU ms per item) over `seconds`, after one warm-up element.

    CPU time (all threads of this process) per item is what other load on the machine disturbs
    least; items/s is what training sees.
    """
    next(iterator)
    count, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        next(iterator)
        count += items_per_element
    return count / (time.perf_counter() - start), 1000 * (time.process_time() - cpu_start) / count


def decode_frames_per_second(jpeg_frames, seconds):
    dataset = (
        tf.data.Dataset.from_tensor_slices(jpeg_frames)
        .repeat()
        .map(lambda s: tf.io.decode_jpeg(s, channels=3), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(64)
        .prefetch(tf.data.AUTOTUNE)
    )
    return _rate(iter(dataset), 64, seconds)


def distinct_frames_per_clip(views):
    """Frames a clip decodes: the union of its views' frame indices (overlapping views share)."""
    frames = set()
    for view, length in zip(views.views, views.lengths):
        frames.update(range(view.offset, view.offset + length, view.factor)[: views.final_length])
    return len(frames)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measuring time per setting")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--train_steps", type=int, default=3,
                        help="train steps timed per setting (on in-memory views) for the consumption "
                        "rate; 0 skips it")
    args = parser.parse_args()

    settings = {
        "paper (2 views x 32 frames, 128x128)": (ViewConfig.two_views(32), AugmentConfig(output_size=128), "paper"),
        "CPU preset (2 views x 16 frames, 64x64)": (ViewConfig.two_views(16), AugmentConfig(output_size=64), "cpu"),
    }
    with tempfile.TemporaryDirectory() as folder:
        pattern, jpeg_frames = write_records(folder, args.videos)
        mean_kb = np.mean([len(f) for f in jpeg_frames]) / 1024
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"cores: {os.cpu_count()}  load average before measuring: {load}  tensorflow {tf.__version__}")
        print(f"records: {args.videos} videos x {FRAMES_PER_VIDEO} frames of {FRAME_WIDTH}x{FRAME_HEIGHT}, "
              f"{mean_kb:.1f} KiB per JPEG frame; batch {args.batch_size}; {args.seconds:.0f} s per measurement")
        decode_fps, decode_cpu_ms = decode_frames_per_second(jpeg_frames, args.seconds)
        print(f"JPEG decode ceiling: {decode_fps:,.0f} frames/s ({decode_cpu_ms:.2f} CPU ms per frame)")
        for name, (views, augment, preset) in settings.items():
            dataset = pipeline.pretrain_dataset(pattern, views, augment, args.batch_size, seed=0)
            clips, cpu_ms = _rate(iter(dataset), args.batch_size, args.seconds)
            per_clip = distinct_frames_per_clip(views)
            ceiling = decode_fps / per_clip
            print(f"{name}: {clips:6.1f} clips/s, {cpu_ms:5.1f} CPU ms per clip  (decode ceiling {ceiling:6.1f} "
                  f"clips/s at {per_clip} decoded frames per clip: pipeline at {100 * clips / ceiling:.0f}% of it)")
            if args.train_steps:
                from train_step import measure  # bench/train_step.py

                # The paper preset's step is seconds long on a CPU: time it at batch 2.
                batch = args.batch_size if preset == "cpu" else min(args.batch_size, 2)
                seconds, _ = measure(preset, "float32", batch, args.train_steps, False)
                consumed = batch / seconds
                print(f"  {preset} train step consumes {consumed:6.1f} clips/s (batch {batch}, float32): the "
                      f"pipeline alone delivers {clips / consumed:.1f}x that")


if __name__ == "__main__":
    main()
