"""R(2+1)D building blocks of the VDIM encoder (paper Fig. 2, SPEC §1).

All blocks take and return channels-last video tensors `(B, T, H, W, C)`.
"""

import keras
from keras import layers, ops


def _bn(name):
    # Synchronized so that under MirroredStrategy every replica normalises with the statistics of
    # the global batch and keeps identical moving statistics (STACK.md). Keras accepts the flag on
    # the TensorFlow backend only; on JAX (bench/gpu.py, one device) there is nothing to synchronize.
    synchronized = keras.backend.backend() == "tensorflow"
    return layers.BatchNormalization(synchronized=synchronized, momentum=0.9, epsilon=1e-5, name=name)


@keras.saving.register_keras_serializable(package="vdim_tf")
class ConvBlock(layers.Layer):
    """R(2+1)D conv block (Fig. 2a): spatial conv `1×k×k`, then temporal conv `kt×1×1`, each + ReLU.

    Args:
      width: output channels of both convs.
      kernel: spatial kernel size k.
      stride: spatial stride.
      t_kernel: temporal kernel size kt.
      t_stride: temporal stride.
      padding: zero padding on both sides of height and width before the spatial conv and of time
        before the temporal conv (block 1 of the paper uses 2); 0 means "valid".
      batch_norm: batch norm after each conv (Table 1 has it off for both conv blocks).

    Call arguments:
      x: `(B, T, H, W, C_in)`.
      training: Python bool or tensor, for batch norm.

    Returns:
      `(B, T', H', W', width)`.

    Example:
    >>> block = ConvBlock(64, kernel=5, stride=2, t_kernel=5, t_stride=2, padding=2)
    >>> block(keras.random.normal((1, 32, 128, 128, 3))).shape
    (1, 16, 64, 64, 64)
    """

    def __init__(self, width, kernel, stride, t_kernel, t_stride, padding=0, batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.kernel = kernel
        self.stride = stride
        self.t_kernel = t_kernel
        self.t_stride = t_stride
        self.padding = padding
        self.batch_norm = batch_norm
        # Each conv pads only the axes it convolves, as a (2+1)D block with padding p does.
        self.pad_spatial = layers.ZeroPadding3D((0, padding, padding)) if padding else None
        self.pad_temporal = layers.ZeroPadding3D((padding, 0, 0)) if padding else None
        self.spatial = layers.Conv3D(
            width, (1, kernel, kernel), strides=(1, stride, stride), use_bias=not batch_norm, name="spatial"
        )
        self.temporal = layers.Conv3D(
            width, (t_kernel, 1, 1), strides=(t_stride, 1, 1), use_bias=not batch_norm, name="temporal"
        )
        self.bn_spatial = _bn("bn_spatial") if batch_norm else None
        self.bn_temporal = _bn("bn_temporal") if batch_norm else None

    def call(self, x, training=None):
        if self.pad_spatial is not None:
            x = self.pad_spatial(x)
        x = self.spatial(x)
        if self.bn_spatial is not None:
            x = self.bn_spatial(x, training=training)
        x = ops.relu(x)
        if self.pad_temporal is not None:
            x = self.pad_temporal(x)
        x = self.temporal(x)
        if self.bn_temporal is not None:
            x = self.bn_temporal(x, training=training)
        return ops.relu(x)

    def get_config(self):
        config = super().get_config()
        config.update(
            width=self.width, kernel=self.kernel, stride=self.stride, t_kernel=self.t_kernel,
            t_stride=self.t_stride, padding=self.padding, batch_norm=self.batch_norm,
        )
        return config


@keras.saving.register_keras_serializable(package="vdim_tf")
class ResidualBranch(layers.Layer):
    """The residual branch of a ResBlock: ReLU → spatial conv → ReLU → temporal conv.

    Pre-activated because the residual stream itself stays linear (nothing after the sum, as in
    AMDIM). The temporal conv, the last of the branch, is zero-initialised so that every block
    starts out as its shortcut. No biases: the paper's 17.3M parameter count has none here.
    """

    def __init__(self, width, kernel, stride, t_kernel, t_stride, batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.kernel = kernel
        self.stride = stride
        self.t_kernel = t_kernel
        self.t_stride = t_stride
        self.batch_norm = batch_norm
        self.spatial = layers.Conv3D(
            width, (1, kernel, kernel), strides=(1, stride, stride), use_bias=False, name="spatial"
        )
        self.temporal = layers.Conv3D(
            width, (t_kernel, 1, 1), strides=(t_stride, 1, 1), use_bias=False,
            kernel_initializer="zeros", name="temporal",
        )
        self.bn_spatial = _bn("bn_spatial") if batch_norm else None
        self.bn_temporal = _bn("bn_temporal") if batch_norm else None

    def call(self, x, training=None):
        x = self.spatial(ops.relu(x))
        if self.bn_spatial is not None:
            x = self.bn_spatial(x, training=training)
        x = self.temporal(ops.relu(x))
        if self.bn_temporal is not None:
            x = self.bn_temporal(x, training=training)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            width=self.width, kernel=self.kernel, stride=self.stride, t_kernel=self.t_kernel,
            t_stride=self.t_stride, batch_norm=self.batch_norm,
        )
        return config


@keras.saving.register_keras_serializable(package="vdim_tf")
class ResBlock(layers.Layer):
    """Residual R(2+1)D block followed by `num_1x1` residual 1×1×1 blocks (paper Fig. 2b).

    The shortcut of the first block is the input average-pooled to the output grid (the block's own
    kernel and stride, no padding) and zero-padded in channels where the width grows. The 1×1×1
    blocks add depth without growing the receptive field, which is what keeps features at the
    paper's layers 5 and 6 local.

    Args:
      width: output channels; must be >= the input channels.
      kernel, stride: spatial kernel and stride of the first conv.
      t_kernel, t_stride: temporal kernel and stride.
      num_1x1: number of residual 1×1×1 R(2+1)D blocks after the first.
      batch_norm: batch norm inside the residual branches (AMDIM keeps it off; a flag).

    Call arguments:
      x: `(B, T, H, W, C_in)`.
      training: for batch norm.

    Returns:
      `(B, T', H', W', width)`, with `T' = (T - t_kernel) // t_stride + 1` and likewise in space.

    Example:
    >>> block = ResBlock(128, kernel=4, stride=2, t_kernel=1, t_stride=1, num_1x1=3)
    >>> block(keras.random.normal((1, 14, 62, 62, 64))).shape
    (1, 14, 30, 30, 128)
    """

    def __init__(self, width, kernel, stride, t_kernel, t_stride, num_1x1=0, batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.kernel = kernel
        self.stride = stride
        self.t_kernel = t_kernel
        self.t_stride = t_stride
        self.num_1x1 = num_1x1
        self.batch_norm = batch_norm
        self.branch = ResidualBranch(width, kernel, stride, t_kernel, t_stride, batch_norm, name="branch")
        self.pool = layers.AveragePooling3D(
            pool_size=(t_kernel, kernel, kernel), strides=(t_stride, stride, stride), padding="valid"
        )
        self.branches_1x1 = []
        for i in range(num_1x1):
            branch = ResidualBranch(width, 1, 1, 1, 1, batch_norm, name=f"branch_1x1_{i}")
            setattr(self, f"branch_1x1_{i}", branch)  # an attribute, so tf.train.Checkpoint sees it
            self.branches_1x1.append(branch)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels > self.width:
            raise ValueError(
                f"ResBlock {self.name}: input has {in_channels} channels but width={self.width}; "
                "the zero-padded shortcut needs width >= input channels"
            )
        self.channel_pad = self.width - in_channels

    def call(self, x, training=None):
        shortcut = self.pool(x)
        if self.channel_pad:
            shortcut = ops.pad(shortcut, [[0, 0]] * 4 + [[0, self.channel_pad]])
        x = shortcut + self.branch(x, training=training)
        for branch in self.branches_1x1:
            x = x + branch(x, training=training)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            width=self.width, kernel=self.kernel, stride=self.stride, t_kernel=self.t_kernel,
            t_stride=self.t_stride, num_1x1=self.num_1x1, batch_norm=self.batch_norm,
        )
        return config
