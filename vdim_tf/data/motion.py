"""A real-video benchmark whose classes only motion tells apart: playback speed × direction.

Every example is `frames` frames of one real clip (UCF-101 / HMDB-51 in `../shared/data`) played
forward or reversed at speed s (every s-th source frame). Classes (`class_names`):
`forward_1x, forward_2x, reversed_1x, reversed_2x` for the default `speeds=(1, 2)`.

Construction (why a single frame is at chance, exactly):

- A clip is cut into *segments* of `M = lcm(speeds) * frames` source frames, starting every `hop`
  frames. Inside a segment, speed s tiles blocks of `s * frames` source frames, and each block gives
  s examples, one per phase p (source frames `p, p + s, p + 2s, ...` of the block). So for every
  class, a segment's examples use each of its M frames exactly once; reversed classes use the same
  frames in reverse order. Summed over segments and clips, **every class holds the same multiset of
  frames** (byte-identical JPEGs: each source frame is encoded once and shared) and the same number
  of examples: a model that sees one frame, or any order-free statistic of the frames, is at
  chance (1 / number of classes) by construction.
- No padding: every example is `frames` distinct source frames in arithmetic progression
  (step +s or -s); a clip shorter than one segment gives no example and is reported as skipped.
  Every record is exactly `frames` long, so views that fit in `frames` never repeat a frame.
- Train and test come from different source videos: `TRAIN_SOURCES` and `TEST_SOURCES`, a fixed
  split of the clips (both SoccerJuggling clips in train; the test set mixes UCF-101 and HMDB-51).

Why speeds (1, 2) and 32 frames, not three speeds (6 classes): the CPU preset's views are 16 frames;
pretraining with the paper's views (view 2 at offset 0, factor 2) and fine-tuning with K = 2 views
both read 32 frames. Three speeds (1, 2, 3) need segments of lcm(1, 2, 3) * 32 = 192 frames, which
only 3 of the clips have (240, 251 and 307 frames); two speeds need 64, which 14 of 18 have. Pass
`speeds=(1, 2, 3)` with longer clips to get 6 classes.

Each record's `video/filename` is `<source clip>#<start>:<stop>:<step>` (a Python slice of the
clip's frames), so every example can be traced to, and checked against, its source frames.

Output (the layout `prepare` writes, so `pretrain`, `finetune` and `evaluate` read it unchanged):

    {output_dir}/labels.txt                          class names, index order
    {output_dir}/manifest.json                       settings, sources per split, counts, skipped clips
    {output_dir}/{split}/{split}-{i:05d}-of-{n:05d}.tfrecord

Example:

    manifest = build_benchmark(MotionConfig(data_dir="../shared/data", output_dir="data/motion"))
"""

import dataclasses
import json
import math
import os
import random

import tensorflow as tf

from vdim_tf.data import records
from vdim_tf.data.decode import VideoError, decode_video

# The fixed split of the clips in ../shared/data (SOURCES.md), by source video. Clips under 64
# frames (HMDB-51 jump 40, dive 45, drink 48, TrumanShow wave 48) are too short for the default
# segment and are left out of both.
TRAIN_SOURCES = (
    "ucf101_sample/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
    "ucf101_sample/BaseballPitch/v_BaseballPitch_g01_c01.avi",
    "ucf101_sample/HeadMassage/v_HeadMassage_g02_c05.avi",
    "ucf101_sample/SoccerJuggling/v_SoccerJuggling_g23_c01.avi",
    "ucf101_sample/SoccerJuggling/v_SoccerJuggling_g24_c01.avi",
    "hmdb51_sample/wave/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi",
    "hmdb51_sample/climb_stairs/Bruno_Walks_up_Stairs_-_Chicago_Dog_Training_-_We_can_teach_ANYTHING_to_a_dog!!!!"
    "_climb_stairs_f_cm_np1_fr_med_0.mp4",
    "hmdb51_sample/handstand/Bodenturnen_im_sportunterricht_handstand_f_cm_np1_le_med_1.mp4",
    "hmdb51_sample/shoot_gun/DefensivePistolShootingTechniques_shoot_gun_f_nm_np1_fr_med_3.mp4",
)
TEST_SOURCES = (
    "ucf101_sample/Basketball/v_Basketball_g01_c01.avi",
    "ucf101_sample/Shotput/v_Shotput_g05_c02.avi",
    "hmdb51_sample/swing_baseball/BaseballSwingAnalysis_swing_baseball_u_nm_np1_ba_med_0.mp4",
    "hmdb51_sample/wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi",
    "hmdb51_sample/talk/Fellowship_4_talk_u_nm_np1_fr_med_0.mp4",
)
DIRECTIONS = ("forward", "reversed")
# Shuffles examples across shards (so a shard mixes classes and clips); fixed, so a rebuild is identical.
_SHUFFLE_SEED = "vdim_tf.motion"


@dataclasses.dataclass(frozen=True)
class MotionConfig:
    """What to build.

    Attributes:
      data_dir: folder holding the source clips (`../shared/data`).
      output_dir: where the records, `labels.txt` and `manifest.json` go.
      speeds: playback speeds (source frames per example frame), distinct ints >= 1.
      frames: frames per example; the longest view setting it serves (32: two 16-frame views).
      hop: source frames between segment starts (12: segments overlap; 12 does not divide 32,
        so no two speed-1 examples are the same window).
      short_side: pixels of the shorter side of the stored frames (64: the CPU preset's views).
      jpeg_quality: JPEG quality of the stored frames, 1-100.
      train_sources, test_sources: clip paths relative to `data_dir`, disjoint.
      examples_per_shard: at most this many examples per TFRecord shard.
    """

    data_dir: str
    output_dir: str
    speeds: tuple = (1, 2)
    frames: int = 32
    hop: int = 12
    short_side: int = 64
    jpeg_quality: int = 90
    train_sources: tuple = TRAIN_SOURCES
    test_sources: tuple = TEST_SOURCES
    examples_per_shard: int = 200

    @property
    def segment_length(self):
        return math.lcm(*self.speeds) * self.frames

    @property
    def class_names(self):
        return class_names(self.speeds)

    def validate(self):
        if not self.speeds or len(set(self.speeds)) != len(self.speeds) or min(self.speeds) < 1:
            raise ValueError(f"speeds={self.speeds}: give distinct integers >= 1, e.g. 1,2")
        if self.frames < 2:
            raise ValueError(f"frames={self.frames}: must be >= 2 (one frame has no motion)")
        if self.hop < 1:
            raise ValueError(f"hop={self.hop}: must be >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality={self.jpeg_quality}: must be in 1..100")
        if self.short_side < 1:
            raise ValueError(f"short_side={self.short_side}: must be >= 1")
        shared = set(self.train_sources) & set(self.test_sources)
        if shared:
            raise ValueError(f"train and test sources must differ; both list {sorted(shared)}")
        if not os.path.isdir(self.data_dir):
            raise FileNotFoundError(f"data_dir={self.data_dir}: no such folder; it should hold the UCF-101/HMDB-51 "
                                    "clips of ../shared/data (see SOURCES.md there)")


def class_names(speeds):
    """`forward_1x, forward_2x, ..., reversed_1x, ...`: direction-major, speeds ascending."""
    return [f"{direction}_{speed}x" for direction in DIRECTIONS for speed in sorted(speeds)]


def segment_examples(segment_start, speeds, frames):
    """The examples of one segment, as `(class name, source frame indices)`.

    For each speed s, the segment's `lcm(speeds) * frames` source frames are tiled by blocks of
    `s * frames`; block b and phase p give the indices `start + b*s*frames + p + s*[0..frames)`,
    forward and reversed. Each class therefore uses every frame of the segment exactly once.
    """
    length = math.lcm(*speeds) * frames
    examples = []
    for speed in sorted(speeds):
        for block in range(segment_start, segment_start + length, speed * frames):
            for phase in range(speed):
                indices = list(range(block + phase, block + speed * frames, speed))
                examples.append((f"forward_{speed}x", indices))
                examples.append((f"reversed_{speed}x", indices[::-1]))
    return examples


def clip_examples(num_frames, config):
    """Every example of a clip of `num_frames` frames: segments start at 0, hop, 2*hop, ... while
    they fit. Returns a list of `(class name, indices)`; empty when the clip is shorter than a segment."""
    last = num_frames - config.segment_length
    return [example for start in range(0, last + 1, config.hop)
            for example in segment_examples(start, config.speeds, config.frames)]


def frame_slice(indices):
    """`start:stop:step` of an arithmetic progression of frame indices (as Python slices write it)."""
    step = indices[1] - indices[0]
    stop = indices[-1] + step
    return f"{indices[0]}:{stop if stop >= 0 else ''}:{step}"


def parse_frame_slice(text, num_frames):
    """Inverse of `frame_slice`: the indices a `start:stop:step` text names, in a clip of `num_frames`."""
    start, stop, step = (int(part) if part else None for part in text.split(":"))
    return list(range(num_frames))[start:stop:step]


def write_split(split, examples, config):
    """Writes one split's `(SequenceExample bytes)` list as shards; returns the shard names."""
    split_dir = os.path.join(config.output_dir, split)
    os.makedirs(split_dir, exist_ok=True)
    for name in os.listdir(split_dir):
        if name.endswith(".tfrecord"):
            os.remove(os.path.join(split_dir, name))
    count = max(1, math.ceil(len(examples) / config.examples_per_shard))
    names = []
    for i in range(count):
        name = f"{split}-{i:05d}-of-{count:05d}.tfrecord"
        temp = os.path.join(split_dir, f".{name}.tmp")
        with tf.io.TFRecordWriter(temp) as writer:
            for example in examples[i::count]:
                writer.write(example)
        os.replace(temp, os.path.join(split_dir, name))
        names.append(name)
    return names


def build_benchmark(config, log=print):
    """Decodes the source clips and writes the benchmark's records, `labels.txt` and `manifest.json`.

    Args:
      config: a `MotionConfig`.
      log: called with one line per source clip.

    Returns:
      the manifest dict (also written to `{output_dir}/manifest.json`).

    Raises:
      ValueError: a bad setting, or a split left with no usable clip.
      FileNotFoundError: `data_dir` is missing.
    """
    config.validate()
    names = config.class_names
    label_of = {name: i for i, name in enumerate(names)}
    os.makedirs(config.output_dir, exist_ok=True)
    manifest = {"settings": {k: v for k, v in dataclasses.asdict(config).items() if not k.endswith("_sources")},
                "segment_length": config.segment_length, "labels": names, "splits": {}}
    for split, sources in (("train", config.train_sources), ("test", config.test_sources)):
        serialized, used, skipped = [], {}, []
        counts = dict.fromkeys(names, 0)
        for source in sources:
            path = os.path.join(config.data_dir, source)
            try:
                video = decode_video(path, short_side=config.short_side, jpeg_quality=config.jpeg_quality)
            except VideoError as e:
                skipped.append({"source": source, "reason": str(e)})
                log(f"  {split}: SKIPPED {source}: {e}")
                continue
            examples = clip_examples(len(video.jpeg_frames), config)
            if not examples:
                reason = (f"{len(video.jpeg_frames)} frames, fewer than one segment of {config.segment_length} "
                          f"(lcm of speeds {config.speeds} x {config.frames} frames)")
                skipped.append({"source": source, "reason": reason})
                log(f"  {split}: SKIPPED {source}: {reason}")
                continue
            for name, indices in examples:
                frames = [video.jpeg_frames[i] for i in indices]
                example = records.make_sequence_example(frames, label_of[name], name,
                                                        f"{source}#{frame_slice(indices)}", video.fps)
                serialized.append(example.SerializeToString())
                counts[name] += 1
            used[source] = {"frames": len(video.jpeg_frames), "examples": len(examples)}
            log(f"  {split}: {source}: {len(video.jpeg_frames)} frames -> {len(examples)} examples")
        if not serialized:
            raise ValueError(f"the {split} split has no clip of at least {config.segment_length} frames in "
                             f"{config.data_dir}; use fewer or smaller speeds, fewer frames, or longer clips")
        random.Random(f"{_SHUFFLE_SEED}/{split}").shuffle(serialized)
        shards = write_split(split, serialized, config)
        manifest["splits"][split] = {"examples": len(serialized), "per_class": counts, "sources": used,
                                     "skipped": skipped, "shards": shards}
    with open(os.path.join(config.output_dir, "labels.txt"), "w", encoding="utf-8") as f:
        f.write("".join(f"{name}\n" for name in names))
    with open(os.path.join(config.output_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return manifest
