"""Print an encoder preset's feature sizes and parameter count, block by block.

    python -m vdim_tf.launch.params --encoder=paper
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags

from vdim_tf import launch

flags.DEFINE_string("encoder", "paper", "Encoder preset name (paper, cpu).")
flags.DEFINE_integer("embedding_dim", 512, "|Y| of the global head φ (paper: 512).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import tensorflow as tf

    from vdim_tf.models.encoder import Encoder, get_preset
    from vdim_tf.models.heads import ContrastiveHead

    preset = get_preset(FLAGS.encoder)
    encoder = Encoder(preset=FLAGS.encoder)
    outputs = encoder(tf.zeros((1, preset.frames, preset.size, preset.size, 3)))
    head = ContrastiveHead(FLAGS.embedding_dim)
    head(outputs[preset.global_layer])
    print(f"encoder {FLAGS.encoder!r}, input {preset.frames}×{preset.size}×{preset.size}×3")
    print(f"{'block':>5}  {'kind':<4}  {'output (T×H×W×C)':<20} {'parameters':>12}")
    for index, (spec, block) in enumerate(zip(preset.blocks, encoder.blocks), start=1):
        shape = "×".join(str(d) for d in outputs[index].shape[1:])
        print(f"{index:>5}  {spec.kind:<4}  {shape:<20} {block.count_params():>12,}")
    rest = encoder.count_params() - sum(b.count_params() for b in encoder.blocks)
    print(f"{'':>5}  {'bn':<4}  {'output batch norm':<20} {rest:>12,}")
    print(f"Ψ total{'':<27}{encoder.count_params():>12,}")
    print(f"φ_{preset.global_layer} head{'':<25}{head.count_params():>12,}")
    print(f"φ_{preset.global_layer}∘Ψ (evaluation model){'':<9}{encoder.count_params() + head.count_params():>12,}")


if __name__ == "__main__":
    launch.run(main)
