"""Prepare CUHK03-NP (Zhong et al., CVPR 2017) for reid_tf; the datasets: reid_tf.datasets.cuhk03_np.

    python -m data_tools.prepare_cuhk03_np --src cuhk03-np/detected --kind detected --out data/cuhk03_np/detected
    python -m data_tools.prepare_cuhk03_np --src cuhk03-np/labeled --kind labeled --out data/cuhk03_np/labeled

Same layout and reader as Market-1501 (data_tools.bounding_boxes); PNG names `PPPP_cC_...png`.
"""
from absl import flags

from data_tools import bounding_boxes
from reid_tf import cli
from reid_tf.datasets import cuhk03_np


def main(argv: list[str]) -> None:
    del argv
    kind = flags.FLAGS.kind
    bounding_boxes.run(f"cuhk03_np_{kind}", cuhk03_np.NAME, cuhk03_np.EXPECTED[kind], suffix=".png")


if __name__ == "__main__":
    bounding_boxes.define_flags("CUHK03-NP detected/ or labeled/", "data/cuhk03_np/detected")
    flags.DEFINE_enum("kind", None, ["detected", "labeled"], "which boxes --src holds", required=True)
    cli.run(main)
