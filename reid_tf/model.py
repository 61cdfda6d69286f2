"""The Siamese network of Figure 2 (§3.1), built from a ModelConfig preset, as an image encoder
and a pair head.

    image (B, 160, 60, 3) RGB in [0, 1]                                         ── image encoder ──
      → conv1–3 (and conv3b for CSN-4)                 x(2) 40×15, x(3) 20×8, x(4) 10×4 (× 96)
      → per level: stripes → STN → parts (B, P, f, f, 96), θ (B, P, 2, 3)
      → parts → ranking net → 256-d unit embedding r
    encoder(image_a), encoder(image_b)                                           ── pair head ──
      → per level: Eq. 2 both ways (x_a * parts_b, x_b * parts_a)   sim_j (H_j, W_j, 6·96)
      → max-pool every sim_j to 10×4, concatenate                   10 × 4 × 1152 for (L2, L3)
      → conv4 1×1→32, conv5 3×3→32 + pool, conv6 1×1→500, GAP, dense 2   → logits, p(match)
      → d = ‖r_a − r_b‖ (Eq. 5), score (Eq. 7)

Everything that depends on one image alone is in the encoder (about 92 % of a pair's FLOPs for
Ours-(L2, L3)); the head holds what needs both. `build_model` composes them into the Siamese
keras.Model of the paper; `encoder_of` / `pair_head_of` give the two parts of a built or loaded
model, so that scoring, training on shared images, visualisation and export use them directly.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

import keras
from reid_tf import config
from reid_tf.config import ModelConfig, get_model_config
from reid_tf.layers import ConvBlock, RankingBranch
from reid_tf.layers.blocks import weight_decay
from reid_tf.layers.csn import CSNParts, CSNSimilarity
from reid_tf.layers.scores import EmbeddingDistance, FinalScore, MatchProbability

# Trunk layer for each level: level j's CSN reads the output of this conv block (§3.1, §3.2).
TRUNK = {1: ("conv1", config.CONV1), 2: ("conv2", config.CONV2), 3: ("conv3", config.CONV3),
         4: ("conv3b", config.CONV3B)}
ENCODER, PAIR_HEAD = "encoder", "pair_head"
# Encoder outputs the pair head reads, per level j ("map_j", "parts_j") and overall ("embedding");
# "theta_j" is an encoder output for Figure 4 only.
PAIR_FEATURES = ("map", "parts")


def _pool_to_grid(x, name: str):
    """Max-pool (2×2) a similarity map until it reaches the common 10×4 grid (DESIGN)."""
    i = 0
    while tuple(x.shape[1:3]) != config.SIM_GRID:
        if x.shape[1] < config.SIM_GRID[0]:
            raise ValueError(f"{name}: map {x.shape[1:3]} is smaller than the grid {config.SIM_GRID}")
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"{name}_pool{i}")(x)
        i += 1
    return x


def build_encoder(cfg: ModelConfig) -> keras.Model:
    """image (B, 160, 60, 3) in [0, 1] → {"map_j", "parts_j", "theta_j" per level j, "embedding"}."""
    image = keras.Input((config.INPUT_HEIGHT, config.INPUT_WIDTH, config.INPUT_CHANNELS), name="image")
    # Inputs arrive in [0, 1]; centre them on 0 inside the model so callers never normalise.
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="normalise")(image)
    maps = {}
    for level in range(1, max(cfg.levels) + 1):
        layer_name, (k, n) = TRUNK[level]
        x = maps[level] = ConvBlock(n, k, name=layer_name)(x)
    outputs, descriptors = {}, []
    for level in cfg.levels:
        parts, theta = CSNParts(config.PART_SIZE[level], config.STRIPES[level] if cfg.dividing else None,
                                stn=cfg.stn, name=f"csn_{level}")(maps[level])
        outputs.update({f"map_{level}": maps[level], f"parts_{level}": parts, f"theta_{level}": theta})
        descriptors.append(RankingBranch(name=f"rank_{level}")(parts))
    r = descriptors[0] if len(descriptors) == 1 else keras.layers.Concatenate(name="rank_concat")(descriptors)
    r = keras.layers.Dense(config.EMBEDDING_DIM, kernel_regularizer=weight_decay(), name="embedding")(r)
    outputs["embedding"] = keras.layers.UnitNormalization(name="l2_normalise")(r)
    return keras.Model(image, outputs, name=ENCODER)


def head_input_names(levels) -> list[str]:
    """The pair head's inputs: every PAIR_FEATURES of each level and the embedding, for a and b."""
    names = [f"{kind}_{level}" for level in levels for kind in PAIR_FEATURES] + ["embedding"]
    return [f"{name}_{side}" for side in "ab" for name in names]


def build_pair_head(cfg: ModelConfig, encoder: keras.Model, correlation: str = "shift") -> keras.Model:
    """{"<feature>_a", "<feature>_b"} (encoder outputs of both images) → logits, p_match, distance,
    score and sim_j per level."""
    spec = encoder.output
    inputs = {name: keras.Input(spec[name[:-2]].shape[1:], name=name) for name in head_input_names(cfg.levels)}
    outputs, pooled = {}, []
    for level in cfg.levels:
        sim = CSNSimilarity(correlation, name=f"similarity_{level}")(
            [inputs[f"map_{level}_a"], inputs[f"map_{level}_b"],
             inputs[f"parts_{level}_a"], inputs[f"parts_{level}_b"]])
        outputs[f"sim_{level}"] = sim
        pooled.append(_pool_to_grid(sim, f"sim_{level}"))
    x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="sim_concat")(pooled)
    x = ConvBlock(config.CONV4[1], config.CONV4[0], pool=False, name="conv4")(x)
    x = ConvBlock(config.CONV5[1], config.CONV5[0], pool=True, name="conv5")(x)
    x = ConvBlock(config.CONV6[1], config.CONV6[0], pool=False, name="conv6")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    logits = keras.layers.Dense(config.NUM_CLASSES, kernel_regularizer=weight_decay(), name="logits")(x)
    p_match = MatchProbability(name="p_match")(logits)
    distance = EmbeddingDistance(name="distance")([inputs["embedding_a"], inputs["embedding_b"]])
    # "Ours-cls" has no ranking loss and ranks by p(match) alone (DESIGN "Losses and score").
    score = FinalScore(use_distance=cfg.contrastive, name="score")([p_match, distance])
    outputs.update(logits=logits, p_match=p_match, distance=distance, score=score)
    return keras.Model(inputs, outputs, name=PAIR_HEAD)


def head_inputs(features_a: dict, features_b: dict, levels) -> dict:
    """The pair head's input dict from two encoder output dicts."""
    return {name: (features_a if name.endswith("_a") else features_b)[name[:-2]]
            for name in head_input_names(levels)}


def pair_outputs(features_a: dict, features_b: dict, head_out: dict, levels) -> dict:
    """The Siamese model's outputs: the head's, plus each image's embedding and θ per level."""
    out = dict(head_out)
    out.update(embedding_a=features_a["embedding"], embedding_b=features_b["embedding"])
    for level in levels:
        out[f"theta_{level}_a"], out[f"theta_{level}_b"] = features_a[f"theta_{level}"], features_b[f"theta_{level}"]
    return out


def build_model(name_or_config: str | ModelConfig = "l23", correlation: str = "shift") -> keras.Model:
    """Build the network of a preset ("l23", "l234", "l2", "l3", "l4", "cls", "c1"–"c4").

    `correlation` picks how the pair head computes Eq. 2 ("shift", "fft" or "direct", see
    reid_tf.layers.CSNSimilarity); the results are the same to float32 rounding.

    Returns a keras.Model with inputs {"image_a", "image_b"} (B, 160, 60, 3) float32 RGB in [0, 1]
    and dict outputs:
      logits (B, 2), p_match (B,), embedding_a / embedding_b (B, 256) unit L2 norm, distance (B,)
      (Eq. 5), score (B,) (Eq. 7; p_match alone for "cls"), and per level j: sim_j (B, H_j, W_j, 6C)
      and theta_j_a / theta_j_b (B, P, 2, 3) for visualisation (Figure 4).
    Its two parts are `encoder_of(model)` and `pair_head_of(model)`.
    """
    cfg = get_model_config(name_or_config)
    encoder = build_encoder(cfg)
    head = build_pair_head(cfg, encoder, correlation)
    shape = (config.INPUT_HEIGHT, config.INPUT_WIDTH, config.INPUT_CHANNELS)
    image_a, image_b = keras.Input(shape, name="image_a"), keras.Input(shape, name="image_b")
    fa, fb = encoder(image_a), encoder(image_b)
    outputs = pair_outputs(fa, fb, head(head_inputs(fa, fb, cfg.levels)), cfg.levels)
    return keras.Model({"image_a": image_a, "image_b": image_b}, outputs, name=f"reid_{cfg.name}")


# ---------------------------------------------------------------------------------------------
# The two parts of a built or loaded network, and what other modules need to know about them.
def is_network(model: keras.Model) -> bool:
    """Whether `model` is a network of build_model: an image encoder and a pair head (what a Keras
    model file read by reid_tf.run_folder.load_network must hold)."""
    names = {layer.name for layer in model.layers}
    return ENCODER in names and PAIR_HEAD in names


def encoder_of(model: keras.Model) -> keras.Model:
    """The image encoder of a network from build_model (or reid_tf.run_folder.load_network)."""
    return model.get_layer(ENCODER)


def pair_head_of(model: keras.Model) -> keras.Model:
    """The pair head of a network from build_model (or reid_tf.run_folder.load_network)."""
    return model.get_layer(PAIR_HEAD)


def pair_head_inputs(model: keras.Model) -> list[tuple[str, tuple]]:
    """(name, shape without the batch axis) of each input of the pair head, in its order: map_2_a,
    parts_2_a, …, embedding_b, the names under which a serving export takes the features."""
    return [(tensor.name.split(":")[0], tuple(tensor.shape[1:])) for tensor in pair_head_of(model).inputs]


@dataclasses.dataclass(frozen=True)
class Structure:
    """What a built network is made of, for code that works on its parts (scoring, Figure 4,
    complexity) without knowing layer names.

    Attributes:
      levels: the CSN levels, ascending.
      trunk: the encoder's conv blocks conv1, conv2, … in order (level j's map is trunk[j − 1]'s output).
      csn_parts: level → CSNParts (stripes, part size, STN) of the encoder.
      ranking: level → RankingBranch.
      similarity: level → CSNSimilarity of the head.
      pools: level → the head's max-pooling layers that bring sim_j to the 10 × 4 grid, in order.
      conv4, after_conv4: the head's conv4 block; the layers from conv5 to p(match), in order.
      score: the head's FinalScore (λ, ε, whether d is used).
    """

    levels: tuple[int, ...]
    trunk: tuple
    csn_parts: dict
    ranking: dict
    similarity: dict
    pools: dict
    conv4: object
    after_conv4: tuple
    score: object


def structure(model: keras.Model) -> Structure:
    """The parts of a network from build_model (see Structure)."""
    encoder, head = encoder_of(model), pair_head_of(model)
    csn = {int(layer.name.split("_")[1]): layer for layer in encoder.layers if isinstance(layer, CSNParts)}
    levels = tuple(sorted(csn))
    names = {layer.name for layer in head.layers}
    return Structure(
        levels=levels,
        trunk=tuple(encoder.get_layer(TRUNK[j][0]) for j in range(1, max(levels) + 1)),
        csn_parts=csn,
        ranking={j: encoder.get_layer(f"rank_{j}") for j in levels},
        similarity={j: head.get_layer(f"similarity_{j}") for j in levels},
        pools={j: tuple(head.get_layer(n) for n in sorted(names) if n.startswith(f"sim_{j}_pool"))
               for j in levels},
        conv4=head.get_layer("conv4"),
        after_conv4=tuple(head.get_layer(n) for n in ("conv5", "conv6", "gap", "logits", "p_match")),
        score=head.get_layer("score"),
    )


def model_config_of(model: keras.Model) -> ModelConfig:
    """The ModelConfig a network of build_model was built from, read from its layers (so that it
    can be rebuilt, e.g. with another correlation form)."""
    parts = structure(model)
    csn = parts.csn_parts[parts.levels[0]]  # every level is built with the same dividing and STN
    return ModelConfig(model.name.removeprefix("reid_"), levels=parts.levels, dividing=csn.stripes is not None,
                       stn=csn.use_stn, contrastive=bool(parts.score.use_distance))


# ---------------------------------------------------------------------------------------------
# The network by block, for accounts of its size and cost (Table 5: reid_tf.complexity). A block is
# one top-level layer of the encoder or the head, except that a CSN is two blocks on the image side
# (its localisation net, "csn_j.loc", and the rest: stripes, θ map, sampler, "csn_j.stn") and its
# correlation (Eq. 2) one on the pair side ("csn_j.xcorr").
# Figure 2's parts, the groups of blocks Table 5's readings speak of:
PARTS = ("input", "trunk", "localisation", "sampling", "ranking", "correlation", "head", "other")


@dataclasses.dataclass(frozen=True)
class Block:
    """One block of a network (see above).

    Attributes:
      name: "conv1", "csn_2.loc", "csn_2.stn", "rank_2", "embedding", "csn_2.xcorr", "conv4", ….
      part: its part of Figure 2 (PARTS).
      per_image: in the encoder (run once per image), else in the pair head (once per pair).
      weights: the variables it holds (all of a CSN's sit in its localisation net).
    """

    name: str
    part: str
    per_image: bool
    weights: tuple


def _present(network: keras.Model, *names: str) -> list:
    """The layers of these names that the network has (the concatenations exist only with > 1 level)."""
    held = {layer.name for layer in network.layers}
    return [network.get_layer(name) for name in names if name in held]


def _parts_of_layers(model: keras.Model) -> dict[int, str]:
    """id(layer) -> its part of Figure 2, for the top-level layers of the encoder and the head."""
    s, encoder, head = structure(model), encoder_of(model), pair_head_of(model)
    groups = {
        "input": _present(encoder, "normalise"),
        "trunk": s.trunk,
        "ranking": [*s.ranking.values(), *_present(encoder, "rank_concat", "embedding", "l2_normalise"),
                    head.get_layer("distance")],
        "correlation": [*s.similarity.values(), *(p for pools in s.pools.values() for p in pools),
                        *_present(head, "sim_concat")],
        "head": [s.conv4, *s.after_conv4, s.score],
    }
    return {id(layer): part for part, layers in groups.items() for layer in layers}


def blocks(model: keras.Model) -> tuple[Block, ...]:
    """Every block of a network from build_model: the encoder's in layer order, then the head's."""
    s, parts = structure(model), _parts_of_layers(model)
    level_of = {id(layer): j for table in (s.csn_parts, s.similarity) for j, layer in table.items()}
    out = []
    for network, per_image in ((encoder_of(model), True), (pair_head_of(model), False)):
        for layer in network.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if isinstance(layer, CSNParts):
                j = level_of[id(layer)]
                out += [Block(f"csn_{j}.loc", "localisation", True, tuple(layer.weights)),
                        Block(f"csn_{j}.stn", "sampling", True, ())]
            elif isinstance(layer, CSNSimilarity):
                out.append(Block(f"csn_{level_of[id(layer)]}.xcorr", "correlation", False, ()))
            else:
                out.append(Block(layer.name, parts.get(id(layer), "other"), per_image, tuple(layer.weights)))
    return tuple(out)


def _scope_matches(layer_name: str, component: str) -> bool:
    """A name-scope component of a traced op is its layer's name, or that name with "_<n>" added
    when the scope was entered more than once."""
    return component == layer_name or re.fullmatch(re.escape(layer_name) + r"_\d+", component) is not None


def op_blocks(model: keras.Model) -> Callable[[str], str]:
    """op name -> the name of its Block, for the ops of a graph traced from `model` (alone or inside
    a trainer: the scopes of the layers are what counts); "other" outside every layer."""
    s = structure(model)
    layers = [layer for network in (encoder_of(model), pair_head_of(model)) for layer in network.layers]
    level_of = {id(layer): j for table in (s.csn_parts, s.similarity) for j, layer in table.items()}

    def block(op_name: str) -> str:
        scopes = op_name.split("/")
        for i, component in enumerate(scopes[:-1]):
            matches = [layer for layer in layers if _scope_matches(layer.name, component)]
            if not matches:
                continue
            layer = max(matches, key=lambda m: len(m.name))
            if isinstance(layer, CSNParts):  # its localisation net's ops: inside stn/, in loc conv 1–3 or θ
                inner = scopes[i + 1:-1]
                is_loc = (len(inner) > 1 and _scope_matches(layer.stn.name, inner[0])
                          and any(_scope_matches(m.name, inner[1]) for m in layer.stn.localisation_layers))
                return f"csn_{level_of[id(layer)]}.{'loc' if is_loc else 'stn'}"
            if isinstance(layer, CSNSimilarity):
                return f"csn_{level_of[id(layer)]}.xcorr"
            return layer.name
        return "other"

    return block


# ---------------------------------------------------------------------------------------------
def _named_layers(model: keras.Model) -> dict:
    """Every layer with weights by name: the encoder's and the head's."""
    return {layer.name: layer for layer in [*encoder_of(model).layers, *pair_head_of(model).layers]
            if layer.weights}


def copy_weights(source: keras.Model, target: keras.Model) -> tuple[list[str], list[str]]:
    """Copy the weights of every layer of `source` into the layer of the same name and shapes in
    `target` (fine-tuning from another run, rebuilding with another correlation form).
    Returns (copied layer names, target layers left as they were)."""
    src, copied, kept = _named_layers(source), [], []
    for name, layer in _named_layers(target).items():
        weights = src[name].get_weights() if name in src else None
        if weights is not None and [w.shape for w in weights] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(weights)
            copied.append(name)
        else:
            kept.append(name)
    return copied, kept
