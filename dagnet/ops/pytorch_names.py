"""Names of PyTorch's own layers and functions, as a spec would write them (no torch import).

An unknown op that is one of these is not a typo: ``rrelu`` is not a misspelt
``relu`` but a different function that dagnet does not have yet, so the
checker says so (and how to add it) instead of offering a near name. Names
dagnet registers are left out at the point of use, not here, so the list
needs no update when an op is added.
"""

from __future__ import annotations

PYTORCH_OPS = frozenset("""
    adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d
    adaptive_max_pool2d adaptive_max_pool3d affine_grid alpha_dropout avg_pool1d avg_pool2d
    avg_pool3d batch_norm batch_norm1d batch_norm2d batch_norm3d bilinear celu channel_shuffle
    conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d cosine_similarity
    dropout dropout1d dropout2d dropout3d elu embedding embedding_bag feature_alpha_dropout fold
    fractional_max_pool2d fractional_max_pool3d gelu glu grid_sample group_norm gru gru_cell
    gumbel_softmax hardshrink hardsigmoid hardswish hardtanh instance_norm instance_norm1d
    instance_norm2d instance_norm3d interpolate layer_norm leaky_relu linear local_response_norm
    log_sigmoid log_softmax logsigmoid lp_pool1d lp_pool2d lstm lstm_cell max_pool1d max_pool2d
    max_pool3d max_unpool1d max_unpool2d max_unpool3d mish multihead_attention normalize
    pairwise_distance pixel_shuffle pixel_unshuffle prelu relu relu6 rms_norm rnn rnn_cell rrelu
    scaled_dot_product_attention selu sigmoid silu softmax softmax2d softmin softplus softshrink
    softsign tanh tanhshrink threshold transformer transformer_decoder_layer
    transformer_encoder_layer unfold upsample upsample_bilinear upsample_nearest zero_pad2d
    reflection_pad1d reflection_pad2d replication_pad1d replication_pad2d constant_pad1d
    constant_pad2d pad flatten unflatten reshape permute concat cat add mul matmul mean sum
""".split())
