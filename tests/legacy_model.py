"""TEST FIXTURE: reid_tf.model as it was before the encoder/head split (commit e88963a), kept only
to write a model.keras in the old single-graph format for tests/test_model.py. Not library code.

The Siamese network of Figure 2 (§3.1), built from a ModelConfig preset.

    image_a, image_b (B, 160, 60, 3) RGB in [0, 1]
      → shared conv1–3 (and conv3b for CSN-4)          x(2) 40×15, x(3) 20×8, x(4) 10×4 (× 96)
      → one CSN per level: similarity maps + parts     sim_j (H_j, W_j, 6·96)
      → max-pool every sim_j to 10×4, concatenate      10 × 4 × 1152 for (L2, L3)
      → conv4 1×1→32, conv5 3×3→32 + pool, conv6 1×1→500, GAP, dense 2   → logits
    parts → ranking net (shared by both images) → 256-d unit embeddings → d (Eq. 5)
"""
from __future__ import annotations

import keras
from reid_tf import config
from reid_tf.config import ModelConfig, get_model_config
from reid_tf.layers import CSN, ConvBlock, RankingBranch
from reid_tf.layers.blocks import weight_decay
from reid_tf.layers.scores import EmbeddingDistance, FinalScore, MatchProbability

# Trunk layer for each level: level j's CSN reads the output of this conv block (§3.1, §3.2).
TRUNK = {2: ("conv2", config.CONV2), 3: ("conv3", config.CONV3), 4: ("conv3b", config.CONV3B)}


def _pool_to_grid(x, name: str):
    """Max-pool (2×2) a similarity map until it reaches the common 10×4 grid (DESIGN)."""
    i = 0
    while tuple(x.shape[1:3]) != config.SIM_GRID:
        if x.shape[1] < config.SIM_GRID[0]:
            raise ValueError(f"{name}: map {x.shape[1:3]} is smaller than the grid {config.SIM_GRID}")
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"{name}_pool{i}")(x)
        i += 1
    return x


def build_model(name_or_config: str | ModelConfig = "l23", correlation: str = "shift") -> keras.Model:
    """Build the network of a preset ("l23", "l234", "l2", "l3", "l4", "cls", "c1"–"c4").

    `correlation` picks how the CSNs compute Eq. 2 ("shift", "fft" or "direct", see reid_tf.layers.CSN);
    the results are the same to float32 rounding.

    Returns a keras.Model with inputs {"image_a", "image_b"} (B, 160, 60, 3) float32 RGB in [0, 1]
    and dict outputs:
      logits (B, 2), p_match (B,), embedding_a / embedding_b (B, 256) unit L2 norm, distance (B,)
      (Eq. 5), score (B,) (Eq. 7; p_match alone for "cls"), and per level j: sim_j (B, H_j, W_j, 6C)
      and theta_j_a / theta_j_b (B, P, 2, 3) for visualisation (Figure 4).
    """
    cfg = get_model_config(name_or_config)
    shape = (config.INPUT_HEIGHT, config.INPUT_WIDTH, config.INPUT_CHANNELS)
    image_a = keras.Input(shape, name="image_a")
    image_b = keras.Input(shape, name="image_b")

    # Inputs arrive in [0, 1]; centre them on 0 inside the model so callers never normalise.
    normalise = keras.layers.Rescaling(2.0, offset=-1.0, name="normalise")
    blocks = [ConvBlock(config.CONV1[1], config.CONV1[0], name="conv1")]
    for level in range(2, max(cfg.levels) + 1):
        layer_name, (k, n) = TRUNK[level]
        blocks.append(ConvBlock(n, k, name=layer_name))

    def features(image):
        x, maps = normalise(image), {}
        for level, block in enumerate(blocks, start=1):
            x = block(x)
            maps[level] = x
        return maps

    maps_a, maps_b = features(image_a), features(image_b)
    outputs, pooled, rank_a, rank_b = {}, [], [], []
    for level in cfg.levels:
        csn = CSN(config.PART_SIZE[level], config.STRIPES[level] if cfg.dividing else None,
                  stn=cfg.stn, correlation=correlation, name=f"csn_{level}")
        sim, parts_a, parts_b, theta_a, theta_b = csn([maps_a[level], maps_b[level]])
        outputs.update({f"sim_{level}": sim, f"theta_{level}_a": theta_a, f"theta_{level}_b": theta_b})
        pooled.append(_pool_to_grid(sim, f"sim_{level}"))
        branch = RankingBranch(name=f"rank_{level}")
        rank_a.append(branch(parts_a))
        rank_b.append(branch(parts_b))

    x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="sim_concat")(pooled)
    x = ConvBlock(config.CONV4[1], config.CONV4[0], pool=False, name="conv4")(x)
    x = ConvBlock(config.CONV5[1], config.CONV5[0], pool=True, name="conv5")(x)
    x = ConvBlock(config.CONV6[1], config.CONV6[0], pool=False, name="conv6")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    logits = keras.layers.Dense(config.NUM_CLASSES, kernel_regularizer=weight_decay(), name="logits")(x)

    embed = keras.layers.Dense(config.EMBEDDING_DIM, kernel_regularizer=weight_decay(), name="embedding")
    l2norm = keras.layers.UnitNormalization(name="l2_normalise")

    def embedding(descriptors, suffix):
        d = descriptors[0] if len(descriptors) == 1 else keras.layers.Concatenate(name=f"rank_concat_{suffix}")(descriptors)
        return l2norm(embed(d))

    emb_a, emb_b = embedding(rank_a, "a"), embedding(rank_b, "b")
    p_match = MatchProbability(name="p_match")(logits)
    distance = EmbeddingDistance(name="distance")([emb_a, emb_b])
    # "Ours-cls" has no ranking loss and ranks by p(match) alone (DESIGN "Losses and score").
    score = FinalScore(use_distance=cfg.contrastive, name="score")([p_match, distance])
    outputs.update(logits=logits, p_match=p_match, embedding_a=emb_a, embedding_b=emb_b,
                   distance=distance, score=score)
    return keras.Model({"image_a": image_a, "image_b": image_b}, outputs, name=f"reid_{cfg.name}")


