"""Generate the built-in synthetic dataset by hand (the generator is reid_tf.datasets.synthetic).

    python -m data_tools.make_synthetic --out /tmp/synth --identities 400 --seed 0
"""
from __future__ import annotations

from absl import flags

from reid_tf import cli
from reid_tf.datasets.synthetic import make_synthetic, render

__all__ = ["make_synthetic", "render"]


def _define_flags() -> None:
    """Flags are defined only when run as a script: importing this module must not claim global
    flag names such as --seed."""
    flags.DEFINE_string("out", None, "Output folder.", required=True)
    flags.DEFINE_integer("identities", 400, "Number of identities.")
    flags.DEFINE_integer("seed", 0, "Random seed; (identities, seed) fixes every byte.")
    flags.DEFINE_integer("images_per_camera", 2, "Images per identity and camera.")


def main(argv: list[str]) -> None:
    del argv
    f = flags.FLAGS
    make_synthetic(f.out, f.identities, f.seed, f.images_per_camera)


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
