"""The layers of the paper's network (§3.1), each in its own module."""
from reid_tf.layers.blocks import ConvBlock
from reid_tf.layers.correlation import DepthwiseCrossCorrelation, depthwise_xcorr
from reid_tf.layers.csn import CSN, CSNParts, CSNSimilarity
from reid_tf.layers.ranking import RankingBranch
from reid_tf.layers.sampler import affine_sample
from reid_tf.layers.stn import AffineSTN, central_crop_theta, theta_from_unit

__all__ = ["AffineSTN", "CSN", "CSNParts", "CSNSimilarity", "ConvBlock", "DepthwiseCrossCorrelation", "RankingBranch",
           "affine_sample", "central_crop_theta", "depthwise_xcorr", "theta_from_unit"]
