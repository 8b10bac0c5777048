"""SegNeXt's LightHamHead: a Hamburger (NMF matrix decomposition) decode head.

* SegNeXt: Guo et al., "SegNeXt: Rethinking Convolutional Attention Design for
  Semantic Segmentation", NeurIPS 2022, arXiv:2209.08575,
  https://github.com/Visual-Attention-Network/SegNeXt.
* Hamburger: Geng et al., "Is Attention Better Than Matrix Decomposition?",
  ICLR 2021, arXiv:2109.04553.
* Source of this port: the mmsegmentation 1.x version shipped with OffSeg,
  https://github.com/HVision-NKU/OffSeg, ``mmseg/models/decode_heads/ham_head.py``
  (Apache-2.0, OpenMMLab / the SegNeXt authors). Parameter names match its
  checkpoints (``squeeze.*``, ``hamburger.ham_in.*``, ``hamburger.ham_out.*``,
  ``align.*``, ``conv_seg.*``).

Forward, for the selected levels x_i (SegNeXt: strides 8, 16, 32)::

    x      = squeeze(concat(resize(x_i, size of x_0)))   1x1 ConvModule -> ham_channels
    z      = relu(ham_in(x))                             1x1 conv with bias
    z      = ham_out(NMF2D(z))                           1x1 conv + norm
    x      = relu(x + z)
    logits = conv_seg(dropout(align(x)))                 (B, K, H_0, W_0)

NMF2D factorises the non-negative (D, N) = (C / S, H * W) map of each image into
bases (D, R) and coefficients (N, R) with multiplicative updates, starting from
random bases and softmax coefficients, and returns the low-rank reconstruction.
"""
import jittor as jt
from jittor import nn

from jseg.registry import MODELS

from ..utils import ConvModule, resize
from .decode_head import BaseDecodeHead

__all__ = ['Hamburger', 'LightHamHead', 'NMF2D']

_EPS = 1e-6   # added to the denominators of the multiplicative updates


def _l2_normalize(x, dim):
    """x / max(||x||_2, 1e-12) along ``dim`` (torch.nn.functional.normalize)."""
    norm = (x * x).sum(dim, keepdims=True).sqrt()
    return x / jt.maximum(norm, jt.float32(1e-12))


class NMF2D(nn.Module):
    """Non-negative matrix factorisation of (B, C, H, W) maps, by multiplicative updates.

    Args:
        MD_S (int): S, groups the C channels are split into (D = C / S per group).
        MD_R (int): R, rank of the factorisation (number of bases).
        train_steps (int): update steps in training (6).
        eval_steps (int): update steps in evaluation (7).
        inv_t (float): softmax temperature of the initial coefficients. Accepted
            for the official signature, which ignores it: NMF2D always uses 1.
        rand_init (bool): draw fresh uniform random bases (L2-normalised over D)
            at every forward; otherwise draw them once, keep them as the
            ``bases`` buffer (S, D, R) and reuse them.
        one_step_grad (bool): HamNet's one-step gradient: the update loop runs
            without gradient and only the final coefficient update and the
            reconstruction are differentiated. The official mmseg 1.x / OffSeg
            code differentiates through every step, which is the default here.
        channels (int | None): C; needed only with ``rand_init=False``, to build
            the ``bases`` buffer that official checkpoints then carry.

    Shapes: (B, C, H, W) non-negative -> (B, C, H, W).
    """

    def __init__(self, MD_S=1, MD_R=64, train_steps=6, eval_steps=7, inv_t=100, rand_init=True,
                 one_step_grad=False, channels=None):
        self.S = MD_S
        self.R = MD_R
        self.train_steps = train_steps
        self.eval_steps = eval_steps
        self.inv_t = 1          # the official NMF2D overrides the configured value
        self.rand_init = rand_init
        self.one_step_grad = one_step_grad
        if not rand_init:
            if channels is None:
                raise ValueError('NMF2D: rand_init=False needs channels to build the bases buffer')
            self.bases = self._build_bases(1, self.S, channels // self.S, self.R).stop_grad()   # (S, D, R)

    def _build_bases(self, batch, S, D, R):
        """Uniform [0, 1) bases, unit L2 norm over D: (batch * S, D, R)."""
        return _l2_normalize(jt.rand((batch * S, D, R)), dim=1)

    def local_step(self, x, bases, coef):
        """One multiplicative update of the coefficients, then of the bases.

        x (BS, D, N), bases (BS, D, R), coef (BS, N, R) -> (bases, coef).
        """
        coef = self.compute_coef(x, bases, coef)
        numerator = nn.bmm(x, coef)                                              # (BS, D, R)
        denominator = nn.bmm(bases, nn.bmm(coef.transpose(0, 2, 1), coef))       # (BS, D, R)
        bases = bases * numerator / (denominator + _EPS)
        return bases, coef

    def compute_coef(self, x, bases, coef):
        """Multiplicative update of the coefficients. -> (BS, N, R)."""
        numerator = nn.bmm(x.transpose(0, 2, 1), bases)                         # (BS, N, R)
        denominator = nn.bmm(coef, nn.bmm(bases.transpose(0, 2, 1), bases))     # (BS, N, R)
        return coef * numerator / (denominator + _EPS)

    def local_inference(self, x, bases):
        """Softmax initial coefficients, then the fixed number of update steps."""
        coef = nn.softmax(self.inv_t * nn.bmm(x.transpose(0, 2, 1), bases), dim=-1)   # (BS, N, R)
        steps = self.train_steps if self.is_training() else self.eval_steps
        for _ in range(steps):
            bases, coef = self.local_step(x, bases, coef)
        return bases, coef

    def execute(self, x):
        b, c, h, w = x.shape
        d, n = c // self.S, h * w
        x = x.reshape(b * self.S, d, n)                                          # (BS, D, N)
        if self.rand_init:
            bases = self._build_bases(b, self.S, d, self.R)
        else:
            bases = self.bases.repeat(b, 1, 1)
        bases, coef = self.local_inference(x, bases)
        if self.one_step_grad:
            bases, coef = bases.detach(), coef.detach()
        coef = self.compute_coef(x, bases, coef)
        x = nn.bmm(bases, coef.transpose(0, 2, 1))                               # (BS, D, N)
        return x.reshape(b, c, h, w)


class Hamburger(nn.Module):
    """1x1 conv ("bread"), ReLU, NMF2D ("ham"), 1x1 conv + norm, residual ReLU. (B, C, H, W) -> same.

    Args:
        ham_channels (int): C.
        ham_kwargs (dict): :class:`NMF2D` arguments.
        norm_cfg (dict | None): norm of ``ham_out``.
    """

    def __init__(self, ham_channels=512, ham_kwargs=dict(), norm_cfg=None):
        self.ham_in = ConvModule(ham_channels, ham_channels, 1, norm_cfg=None, act_cfg=None)
        self.ham = NMF2D(**dict(ham_kwargs), channels=ham_channels)
        self.ham_out = ConvModule(ham_channels, ham_channels, 1, norm_cfg=norm_cfg, act_cfg=None)

    def execute(self, x):
        enjoy = nn.relu(self.ham_in(x))
        enjoy = self.ham_out(self.ham(enjoy))
        return nn.relu(x + enjoy)


@MODELS.register_module()
class LightHamHead(BaseDecodeHead):
    """SegNeXt decode head: list of (B, C_i, H_i, W_i) -> (B, K, H_0, W_0).

    Args:
        ham_channels (int): channels of the Hamburger.
        ham_kwargs (dict): :class:`NMF2D` arguments (``MD_S``, ``MD_R``, ``train_steps``,
            ``eval_steps``, ``inv_t``, ``rand_init``; jseg adds ``one_step_grad``).
        **kwargs: :class:`BaseDecodeHead` arguments; ``input_transform`` is always
            'multiple_select'.
    """

    def __init__(self, ham_channels=512, ham_kwargs=dict(), **kwargs):
        super().__init__(input_transform='multiple_select', **kwargs)
        self.ham_channels = ham_channels
        self.squeeze = ConvModule(sum(self.in_channels), ham_channels, 1, conv_cfg=self.conv_cfg,
                                  norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.hamburger = Hamburger(ham_channels, ham_kwargs, norm_cfg=self.norm_cfg)
        self.align = ConvModule(ham_channels, self.channels, 1, conv_cfg=self.conv_cfg,
                                norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)

    def decode(self, inputs):
        """Backbone levels -> aligned features (B, channels, H_0, W_0)."""
        inputs = self._transform_inputs(inputs)
        size = inputs[0].shape[2:]
        inputs = [resize(x, size=size, mode='bilinear', align_corners=self.align_corners) for x in inputs]
        x = self.squeeze(jt.concat(inputs, dim=1))
        return self.align(self.hamburger(x))

    def execute(self, inputs):
        return self.cls_seg(self.decode(inputs))
