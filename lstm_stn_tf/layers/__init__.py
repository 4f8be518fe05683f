"""Keras layers for recurrent spatial-transformer attention (keras.ops only)."""

from lstm_stn_tf.layers.affine_grid_generator import AffineGridGenerator
from lstm_stn_tf.layers.bilinear_interpolation import BilinearInterpolation
from lstm_stn_tf.layers.ends_from_length import EndsFromLength
from lstm_stn_tf.layers.folded_time_distributed import FoldedTimeDistributed
from lstm_stn_tf.layers.gradient_scale import GradientScale
from lstm_stn_tf.layers.lstm_localizer import IDENTITY_TRANSFORM, LSTMLocalizer
from lstm_stn_tf.layers.single_channel_conv2d import SingleChannelConv2D
from lstm_stn_tf.layers.string_steps import StringSteps

__all__ = [
    "AffineGridGenerator",
    "BilinearInterpolation",
    "EndsFromLength",
    "FoldedTimeDistributed",
    "GradientScale",
    "IDENTITY_TRANSFORM",
    "LSTMLocalizer",
    "SingleChannelConv2D",
    "StringSteps",
]
