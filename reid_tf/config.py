"""Every constant of the paper, once, with its source; and the model / training configs.

Paper: Guo & Cheung, "Efficient and Deep Person Re-Identification using Multi-Level Similarity",
CVPR 2018. Section, table and equation numbers below refer to it; "DESIGN" refers to the design
notes (docs/DESIGN.md) that fix what the paper leaves open.
"""
from __future__ import annotations

import dataclasses

# ---------------------------------------------------------------------------------------------
# Input (§3.1: "60 × 160 × 3 in our experiments"; width × height, so NHWC is 160 × 60 × 3).
INPUT_HEIGHT = 160
INPUT_WIDTH = 60
INPUT_CHANNELS = 3

# Feature extractor, Table 1 (conv1–3) and §3.2 "Model extension" (conv3b feeds CSN-4, same
# width as conv3). Every conv here is followed by BN (§4.2), ReLU and 2×2 max pooling (Table 1).
CONV1 = (5, 32)  # Table 1: 5×5×3, 32 filters
CONV2 = (3, 96)  # Table 1: 3×3×32, 96 filters
CONV3 = (3, 96)  # Table 1: 3×3×96, 96 filters
CONV3B = (3, 96)  # §3.2: "another convolutional layer after conv3" (DESIGN: 3×3×96→96)

# Head, Table 1: conv4 1×1→32 (no pool), conv5 3×3→32 + pool, conv6 1×1→500 (no pool) + GAP,
# then the 2 output nodes of §3.1.
CONV4 = (1, 32)
CONV5 = (3, 32)
CONV6 = (1, 500)
NUM_CLASSES = 2  # §3.1: "Two nodes in the final layer"

# Localisation net, Table 1: loc conv1 3×3×96→32 + pool, loc conv2 3×3×32→32 + pool,
# loc conv3 1×1×32→128 + GAP; then "a linear embedding with dimension 6 and tanh" (§3.1).
LOC_CONV1 = (3, 32)
LOC_CONV2 = (3, 32)
LOC_CONV3 = (1, 128)
THETA_SIZE = 6  # §3.1, Eq. 1: affine θ has 6 parameters

# Horizontal stripes per level as [start, stop) rows (§4.2: x(2) rows 1–20, 10–30, 20–40 and
# x(3) rows 1–10, 5–15, 10–20, 1-based; x(4): DESIGN, same rule at height 10).
STRIPES = {
    2: ((0, 20), (10, 30), (20, 40)),
    3: ((0, 10), (5, 15), (10, 20)),
    4: ((0, 5), (2, 7), (5, 10)),
}
# Sampler output size f_j (§4.2 "f1 and f2 are set to be 10 and 5" — a typo for f2, f3 per §3.1;
# f4 = 3 from DESIGN, following f shrinking with the receptive field).
PART_SIZE = {2: 10, 3: 5, 4: 3}
# Every similarity map is max-pooled to this common grid before concatenation (DESIGN: the one
# reading under which §3.1's "10 × 4 × 1152" and the CSN-4 extension are both consistent).
SIM_GRID = (10, 4)

# Ranking net (§3.1): per part conv 3×3→96 + max-pool, parts stacked vertically, conv 3×3→96,
# GAP, levels concatenated, linear embedding to 256, L2-normalised.
RANK_CONV = (3, 96)
EMBEDDING_DIM = 256

# STN constraints (§4.2 asks for scale > 0 and the window inside the stripe; DESIGN prefers a
# parameterisation that guarantees both). Our choice, see docs/DESIGN.md "θ parameterisation".
THETA_MIN_SCALE = 0.1  # smallest s_w, s_h: a window of 10 % of the stripe
THETA_MAX_ROTATION_FRACTION = 0.5  # |r| ≤ this × (1 − s): room left for translation
ROTATION_L1 = 1e-3  # §4.2 "L1 regularization for r_w and r_h"; weight not given — our choice

# Losses and score.
CONTRASTIVE_MARGIN = 1.0  # §3.1, Eq. 4: "α is the margin set to be 1.0"
SCORE_LAMBDA = 0.2  # §3.1, Eq. 7: "λ is set to be 0.2 empirically"
SCORE_EPS = 1e-4  # §3.1, Eq. 7: "ε is set to be a small value like 0.0001"

# The built-in synthetic dataset is ours, not the paper's: its recipe is sized so that the main job
# (`python -m reid_tf.train` with no arguments) trains and evaluates within 15 minutes on 2 CPU cores
# (the step times it was sized against: docs/RESULTS.md, "The main job"): smaller batches (more
# updates in the time) and a time budget. Real datasets always get the paper's recipe below.
SYNTHETIC_BATCH_SIZE = 32
SYNTHETIC_MINUTES = 12.0  # default --max_minutes when training on the synthetic dataset

# Two-stage scoring (reid_tf.shortlist; ours, not the paper's): Eq. 7 on each query's SHORTLIST_K
# nearest gallery images by d, the rest ranked by d. One K for ranking a gallery (reid_tf.rank
# --shortlist) and for the standard protocol (reid_tf.evaluate --shortlist), chosen by measurement:
# docs/RESULTS.md "Ranking and two-stage scoring" (the logbook's "Ranking a gallery" and "Large
# galleries"). Ranking a gallery scores every pair up to RANK_SHORTLIST_ABOVE gallery images (the
# same measurements) and shortlists above.
SHORTLIST_K = 100
RANK_SHORTLIST_ABOVE = 500

# Training recipe, §4.2.
LEARNING_RATE = 5e-4  # "ADAM ... with learning rate 0.0005"
WEIGHT_DECAY = 5e-4  # "Weighting decay is set to be 0.0005"
EPOCHS = 5  # "We train the network for 5 epochs"
BATCH_SIZE = {"cuhk03": 256, "default": 128,  # "256 for CUHK03 and 128 for other two datasets"
              "synthetic": SYNTHETIC_BATCH_SIZE}
NEGATIVES_PER_POSITIVE = 2  # "we only randomly choose two negative pairs for each positive pair"
CROPS_PER_IMAGE = {"cuhk03": 2, "default": 5,  # "randomly sample 2 images for CUHK03 and 5 for others"
                   "synthetic": 1}  # ours: synthetic images are new every generation; no repeats needed
# Shared-image batches (ours, `--pairing=shared`, reid_tf.pairs): camera-A and camera-B images per
# identity visit, at most (K). Measured on CUHK01 at equal pairs with the cross_camera recipe
# (docs/RESULTS.md, shared images against per pair): K = 2 (11 identities, 132 pairs from 44 images)
# encodes half as many images per pair as K = 1 (43 identities a batch of 129 pairs from 86 images)
# but learned about half as much per pair. So K = 1.
SHARED_IMAGES_PER_CAMERA = 1
PAIRINGS = ("per_pair", "shared")
# Multi-camera datasets (Market-1501, DukeMTMC-reID; ours, the paper has none): an epoch draws this
# many cross-camera positives per training identity (DESIGN "Multi-camera pairs"): 751 × 32 × 3 =
# 72,096 pairs on Market-1501, about CUHK01's 52,260, so the paper's 5 epochs keep their meaning.
POSITIVES_PER_IDENTITY = 32
# Two readings of §4.2's pairs (DESIGN "Recipes"; a module each in reid_tf.pairs), both sourced:
# - "cross_camera" (ours): a positive is a camera-A and a camera-B image of one identity, each
#   positive CROPS_PER_IMAGE times per epoch with fresh online crops and flips, negatives
#   cross-camera (reid_tf.pairs); CUHK01: 52 k pairs per epoch.
# - "shifted_copies": the public code of [31] (InnovArul/personreid_normxcorr), whose CUHK01 setting
#   §4.1 follows and whose recipe §4.2 matches: every training image has CROPS_PER_IMAGE translated
#   copies and one flipped copy, made once (datasets/*/dataAugmentation.lua), positives are all
#   pairs of an identity's images and copies, any cameras, each with two random negatives
#   (src/trainMultiGPU.lua); CUHK01: 871 × C(28, 2) positives, 988 k pairs per epoch.
RECIPES = ("cross_camera", "shifted_copies")
# The default for the paper's datasets (VIPeR, CUHK01, CUHK03; each dataset module's `recipe`),
# chosen by measurement on CUHK01 (docs/RESULTS.md, [31]'s recipe; the reasoning: DESIGN "Recipes").
PAPER_RECIPE = "shifted_copies"
# Each recipe's default pairing (ours; DESIGN "Training on shared images"), the one its results
# were measured with (docs/RESULTS.md). cross_camera: per pair, which learned more per pair than
# shared K = 1 on average over two CUHK01 trials. shifted_copies: shared (K = 1), the faster of the two
# and the pairing of every [31]-recipe run; per pair with this recipe has not been measured.
# --strategy=mirrored, which cannot split a shared batch, trains per pair.
RECIPE_PAIRING = {"cross_camera": "per_pair", "shifted_copies": "shared"}
# The most images per camera side a shared visit of each recipe can hold (None: any K). [31]'s
# all-pairs positives cannot be cut into equal K × K blocks, so shifted_copies shares with K = 1 only
# (reid_tf/pairs/shifted_copies.py); the recipe objects and the option checks both read this.
RECIPE_MAX_SHARED_K = {"cross_camera": None, "shifted_copies": 1}
# [31]'s copies are translated by integers drawn from [−0.05 H, 0.05 H] on both axes (H = the
# image height, for the width too), uncovered pixels zero (datasets/cuhk01_test486/dataAugmentation.lua).
COPY_SHIFT_FRACTION = 0.05
# Crop translation range, from Ahmed et al. 2015 (§4.2 "augmentation ... as [2]"): shifts drawn
# uniformly in [−0.05 H, 0.05 H] × [−0.05 W, 0.05 W] around the image centre, plus horizontal flips.
CROP_SHIFT_FRACTION = 0.05

# Protocols (§4.1; DESIGN "Protocols"). These per-family paper values are picked up by the dataset
# modules (reid_tf.datasets.*), which hold each dataset's recipe.
TRIALS = {"cuhk03": 20, "default": 10}  # 20 CUHK03 testsets; 10 random trials otherwise
RANKS = (1, 5, 10)  # Tables 2–4 report top-1/5/10
# [31] (Subramaniam et al., NIPS 2016), whose CUHK01 setting §4.1 follows: its test
# (src/doallTest.lua of InnovArul/personreid_normxcorr) averages CMC over 10 random gallery draws.
RANDOM_GALLERY_DRAWS = 10



def dataset_family(name: str) -> str:
    """'cuhk03_detected' -> 'cuhk03': the key of the paper's per-family tables above (CUHK03-NP is
    not the paper's CUHK03: its recipe is in reid_tf.datasets.cuhk03_np)."""
    return "cuhk03" if name in ("cuhk03_detected", "cuhk03_labeled") else name


def per_dataset(table: dict, name: str):
    """The paper's per-family value (batch size, crops, trials) for a dataset name. The dataset
    modules (reid_tf.datasets.*) read these tables into their specs, which training uses."""
    return table.get(dataset_family(name), table["default"])


# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One variant of Tables 2–4.

    Attributes:
      name: preset name.
      levels: which CSN levels (2 = conv2, 3 = conv3, 4 = conv3b) feed the head.
      dividing: split each feature map into the three stripes (False = C1 of Table 4).
      stn: learn θ with the localisation net (False = C2: the fixed central crop).
      contrastive: train with L_ctr and rank by Eq. 7 (False = "Ours-cls" of Table 3).
    """

    name: str
    levels: tuple[int, ...] = (2, 3)
    dividing: bool = True
    stn: bool = True
    contrastive: bool = True

    def __post_init__(self):
        if not self.levels or any(level not in STRIPES for level in self.levels):
            raise ValueError(f"levels must be a non-empty subset of {sorted(STRIPES)}, got {self.levels}")
        if tuple(sorted(set(self.levels))) != tuple(self.levels):
            raise ValueError(f"levels must be sorted and unique, got {self.levels}")


PRESETS: dict[str, ModelConfig] = {
    "l23": ModelConfig("l23", levels=(2, 3)),  # Table 2/3: Ours-(L2, L3)
    "l234": ModelConfig("l234", levels=(2, 3, 4)),  # Table 2/3: Ours-(L2, L3, L4); Table 4: C4
    "l2": ModelConfig("l2", levels=(2,)),  # Table 3: Ours-L2
    "l3": ModelConfig("l3", levels=(3,)),  # Table 3: Ours-L3
    "l4": ModelConfig("l4", levels=(4,)),  # Table 3: Ours-L4; Table 4: C3
    "cls": ModelConfig("cls", levels=(2, 3), contrastive=False),  # Table 3: Ours-cls
    "c1": ModelConfig("c1", levels=(2, 3, 4), dividing=False),  # Table 4: C1, no dividing
    "c2": ModelConfig("c2", levels=(2, 3, 4), stn=False),  # Table 4: C2, fixed central crop
    "c3": ModelConfig("c3", levels=(4,)),  # Table 4: C3 (= l4)
    "c4": ModelConfig("c4", levels=(2, 3, 4)),  # Table 4: C4 (= l234)
}


def get_model_config(name_or_config: str | ModelConfig) -> ModelConfig:
    """Resolve a preset name (or pass a ModelConfig through); unknown names list the valid ones."""
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    try:
        return PRESETS[name_or_config]
    except KeyError:
        raise ValueError(
            f"unknown model preset {name_or_config!r}; valid presets: {', '.join(PRESETS)}"
        ) from None
