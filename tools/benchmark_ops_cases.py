"""The cases of ``tools/benchmark_ops.py``: OffSeg-T's operator calls at their real shapes, and the
inputs and computations (operator or composition) each case times. See that tool's docstring for
what every ``--op`` covers.
"""


# ---------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------

def offseg_t_carafe_calls(img_size=512, new_channels=(32, 32, 64, 128), strides=(4, 8, 16, 32),
                          lowpass=5, highpass=3, up_group=1):
    """The CARAFE calls of OffSeg-T's head, as (name, C, h, w, k, G, s) of carafe's *input*.

    OffSegHead fuses from the coarsest level up: FreqFusion i takes hr
    channels ``c`` and lr channels ``pre_c`` (the running concatenation), with
    ``compressed_channels = (pre_c + c) // 4``; see the module docstring.
    """
    sizes = [img_size // s for s in strides][::-1]
    chans = list(new_channels)[::-1]
    pre_c, calls = chans[0], []
    for i, (c, hr) in enumerate(zip(chans[1:], sizes[1:]), 1):
        lr = hr // 2
        cc = (pre_c + c) // 4
        calls += [
            (f'FF{i} compressed hr  k{highpass} s1', cc, hr, hr, highpass, up_group, 1),
            (f'FF{i} lr-mask init   k{lowpass} s2', lowpass ** 2 * up_group, lr, lr, lowpass, up_group, 2),
            (f'FF{i} hr-mask init   k{lowpass} s2', highpass ** 2 * up_group, lr, lr, lowpass, up_group, 2),
            (f'FF{i} lr features    k{lowpass} s2', pre_c, lr, lr, lowpass, up_group, 2),
            (f'FF{i} hr features    k{highpass} s1', c, hr, hr, highpass, up_group, 1),
        ]
        pre_c += c
    return calls


def _carafe_case(call, batch):
    name, c, h, w, k, g, s = call
    return dict(op='carafe', name=name, batch=batch, C=c, h=h, w=w, k=k, G=g, s=s,
                shape=f'{batch}x{c}x{h}x{w} k{k} s{s}')


def _offset_case(batch, layout, n=128 * 128, k=150, c=256):
    return dict(op='offset', name='offset attention', batch=batch, N=n, K=k, C=c,
                channels_first=layout == 'channels_first', shape=f'B{batch} HW{n} K{k} C{c}')


def _msda_case(batch, level_shapes=((64, 64), (32, 32), (16, 16)), heads=8, channels=32, points=4):
    lq = sum(h * w for h, w in level_shapes)
    return dict(op='msda', name='ms deform attn', batch=batch, levels=[list(s) for s in level_shapes], Lq=lq,
                nH=heads, D=channels, P=points,
                shape=f'B{batch} Lq{lq} nH{heads} D{channels} P{points}')


def _resize_case(name, batch, c, h, w, out_h, out_w, align_corners=False):
    return dict(op='resize', name=name, batch=batch, C=c, h=h, w=w, H=out_h, W=out_w, align_corners=align_corners,
                shape=f'{batch}x{c}x{h}x{w}->{out_h}x{out_w}')
def offseg_t_softmax_calls(img_size=512, levels=(32, 64, 128), kernels=(3, 5)):
    """OffSeg-T's softmax calls per image as (name, shape without batch, dim, weighted): the
    EfficientFormerV2-S1 attentions over the keys (8 heads, 16x16 queries at 512x512, keys at 16x16 or,
    in the downsampling attention, 32x32) and FreqFusion's kernel normaliser on (1, k*k, H, W)."""
    q = (img_size // 32) ** 2
    calls = [('EffFormerV2 attention', (8, q, q), -1, False),
             ('EffFormerV2 downsample attention', (8, q, 4 * q), -1, False)]
    calls += [(f'FreqFusion normaliser k{k}', (1, k * k, h, h), 2, True) for h in levels for k in kernels]
    return calls


def _softmax_case(call, batch):
    name, shape, dim, weighted = call
    full = (batch,) + tuple(shape) if batch else tuple(shape)
    return dict(op='softmax', name=name, batch=batch, full_shape=list(full), dim=dim, weighted=weighted,
                shape='x'.join(map(str, full)) + f' dim{dim}')


def _gelu_case(batch, shape=(128, 128, 128)):
    full = (batch, *shape)
    return dict(op='gelu', name='GELU (FFN of stage 1)', batch=batch, full_shape=list(full),
                shape='x'.join(map(str, full)))


def _loss_case(batch, classes=150, size=128, label_size=512):
    full = (batch, classes, size, size)
    return dict(op='loss', name='resize + cross-entropy', batch=batch, full_shape=list(full),
                label_size=label_size, shape='x'.join(map(str, full)), differentiable=1)


def _norm_case(kind, batch, channels, size=128, groups=32):
    full = (batch, channels, size, size)
    name = 'BatchNorm (training)' if kind == 'batch' else f'GroupNorm({groups})'
    return dict(op='norm', kind=kind, groups=groups, name=name, batch=batch, full_shape=list(full),
                shape='x'.join(map(str, full)))


def offseg_t_gemm_calls():
    """(name, kind, A shape, B shape, trans_a, trans_b) of the products timed by ``--op gemm``.

    kind: 'matmul' (op(A) @ op(B), a 2-D operand shared by the batch; composition: ``jt.matmul``
    per 2-D slice), 'heads' (the backbone's per-head attention products; composition:
    ``batched_matmul``'s per-head ``jt.matmul`` with its GEMM gradient), 'pointwise' (weight (Cout, Cin) @ x (B, Cin, HW); composition: PointwiseConv's
    permute and one ``jt.matmul``) or 'conv' (the same as a 1x1 convolution; composition:
    ``nn.conv2d``).
    """
    return [
        ('256x256 @ 256x32768', 'matmul', (256, 256), (256, 32768), False, False),
        ('backbone 1x1 conv stage 1 32->128', 'pointwise', (128, 32), (2, 32, 128 * 128), False, False),
        ('backbone 1x1 conv stage 1 128->32', 'pointwise', (32, 128), (2, 128, 128 * 128), False, False),
        ('backbone 1x1 conv stage 2 48->192', 'pointwise', (192, 48), (2, 48, 64 * 64), False, False),
        ('backbone 1x1 conv stage 2 192->48', 'pointwise', (48, 192), (2, 192, 64 * 64), False, False),
        ('stage 4 talking head 8->8', 'pointwise', (8, 8), (2, 8, 256 * 256), False, False),
        ('attention q@k 16x (1024x32)@(32x1024)', 'heads', (16, 1024, 32), (16, 32, 1024), False, False),
        ('attention a@v 16x (1024x1024)@(1024x32)', 'heads', (16, 1024, 1024), (16, 1024, 32), False, False),
        ('stage 3/4 q@k 16x (256x32)@(32x256)', 'heads', (16, 256, 32), (16, 32, 256), False, False),
        ('stage 3/4 a@v 16x (256x256)@(256x128)', 'heads', (16, 256, 256), (16, 256, 128), False, False),
        ('downsampling q@k 16x (256x16)@(16x1024)', 'heads', (16, 256, 16), (16, 16, 1024), False, False),
        ('downsampling a@v 16x (256x1024)@(1024x64)', 'heads', (16, 256, 1024), (16, 1024, 64), False, False),
        ('offset learning (150x256)@(256x16384)', 'matmul', (150, 256), (2, 256, 128 * 128), False, False),
        ('head 1x1 ConvModule 256->256', 'conv', (256, 256), (2, 256, 128 * 128), False, False),
    ]


def _gemm_case(call):
    name, kind, a_shape, b_shape, ta, tb = call
    shape = 'x'.join(map(str, a_shape)) + ' @ ' + 'x'.join(map(str, b_shape))
    return dict(op='gemm', name=name, batch=None, kind=kind, a_shape=list(a_shape), b_shape=list(b_shape),
                trans_a=ta, trans_b=tb, shape=shape)


def _argmax_case(classes=150, size=512):
    shape = (classes, size, size)
    return dict(op='argmax', name='argmax over classes', batch=None, full_shape=list(shape),
                shape='x'.join(map(str, shape)), forward_only=True)


def msda_locations(levels, batch, heads, points, spread=2.0, seed=0):
    """Sampling locations as the pixel decoder makes them: each query's reference point (its pixel
    centre, normalised) plus offsets of ``spread`` pixels (standard deviation) on each level, so
    neighbouring queries read neighbouring pixels; (B, Lq, nH, L, P, 2) float32."""
    import numpy as np
    ref = np.concatenate([np.stack(np.meshgrid((np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h), -1).reshape(-1, 2)
                          for h, w in levels])                                  # (Lq, 2) as (x, y)
    sizes = np.array([[w, h] for h, w in levels], dtype=np.float64)            # (L, 2)
    offsets = np.random.default_rng(seed).standard_normal((batch, len(ref), heads, len(levels), points, 2))
    loc = ref[None, :, None, None, None, :] + spread * offsets / sizes[None, None, None, :, None, :]
    return loc.astype(np.float32)


def offseg_t_dysampler_calls(img_size=512, new_channels=(32, 32, 64, 128), strides=(4, 8, 16, 32), groups=4):
    """The grid_sample calls of OffSeg-T's FreqFusion samplers as (name, C/G, size): FreqFusion i samples the
    running concatenation of channels (x2 upsampled by CARAFE) at the high-resolution size, G groups."""
    sizes = [img_size // s for s in strides][::-1]
    chans = list(new_channels)[::-1]
    pre_c, calls = chans[0], []
    for i, (c, hr) in enumerate(zip(chans[1:], sizes[1:]), 1):
        calls.append((f'FF{i} dysampler C{pre_c}', pre_c // groups, hr))
        pre_c += c
    return calls


def _grid_sample_case(call, batch, groups=4):
    name, c, size = call
    return dict(op='grid_sample', name=name, batch=batch, N=batch * groups, C=c, size=size,
                shape=f'{batch * groups}x{c}x{size}x{size}')


def dysampler_grid(n, size, spread=0.5, seed=0):
    """(n, size, size, 2) float32 grid: pixel centres (align_corners=False) plus offsets of ``spread`` pixels
    (standard deviation)."""
    import numpy as np
    centres = (np.arange(size) + 0.5) / size * 2 - 1
    xs, ys = np.meshgrid(centres, centres)
    offsets = np.random.default_rng(seed).standard_normal((n, size, size, 2)) * spread * 2 / size
    return (np.stack([xs, ys], -1)[None] + offsets).astype(np.float32)


# ---------------------------------------------------------------------------
# building the computations (after Jittor is imported)
# ---------------------------------------------------------------------------

def make_inputs(case, seed=0):
    import jittor as jt
    jt.set_global_seed(seed)
    b = case['batch']
    if case['op'] == 'carafe':
        c, h, w, k, g, s = (case[x] for x in ('C', 'h', 'w', 'k', 'G', 's'))
        feats = jt.randn(b, c, h, w)
        masks = jt.rand(b, g * k * k, h * s, w * s)
        grad = jt.randn(b, c, h * s, w * s)
        inputs, grads = [feats, masks], [grad]
    elif case['op'] == 'resize':
        inputs = [jt.randn(b, case['C'], case['h'], case['w'])]
        grads = [jt.randn(b, case['C'], case['H'], case['W'])]
    elif case['op'] == 'msda':
        lq, nh, d, npts, nl = case['Lq'], case['nH'], case['D'], case['P'], len(case['levels'])
        value = jt.randn(b, lq, nh, d)
        loc = jt.array(msda_locations(case['levels'], b, nh, npts))
        attn = jt.rand(b, lq, nh, nl, npts)
        attn = attn / attn.sum((3, 4), keepdims=True)
        inputs, grads = [value, loc, attn], [jt.randn(b, lq, nh * d)]
    elif case['op'] == 'grid_sample':
        n, c, size = case['N'], case['C'], case['size']
        inputs = [jt.randn(n, c, size, size), jt.array(dysampler_grid(n, size))]
        grads = [jt.randn(n, c, size, size)]
    elif case['op'] == 'softmax':
        x = jt.randn(*case['full_shape']) * 3.0
        inputs, grads = [x], [jt.randn(*case['full_shape'])]
    elif case['op'] == 'argmax':
        inputs, grads = [jt.randn(*case['full_shape'])], []
    elif case['op'] == 'norm':
        c = case['full_shape'][1]
        inputs = [jt.randn(*case['full_shape']) * 2.0 + 1.0, jt.rand(c) + 0.5, jt.randn(c)]
        grads = [jt.randn(*case['full_shape'])]
    elif case['op'] == 'loss':
        b, k, size = case['batch'], case['full_shape'][1], case['label_size']
        label = jt.randint(0, k, shape=(b, size, size))
        label = jt.where(jt.rand(label.shape) < 0.1, jt.full_like(label, 255), label).int32()
        inputs, grads = [jt.randn(*case['full_shape']) * 3.0, label], [jt.ones(1)]
    elif case['op'] == 'gelu':
        inputs, grads = [jt.randn(*case['full_shape'])], [jt.randn(*case['full_shape'])]
    elif case['op'] == 'gemm':
        a, x = jt.randn(*case['a_shape']), jt.randn(*case['b_shape'])
        out = make_fn(case, 'jit')(a, x)[0]
        inputs, grads = [a, x], [jt.randn(*out.shape)]
    else:
        n, k, c, cf = case['N'], case['K'], case['C'], case['channels_first']
        feats = jt.randn(b, c, n) if cf else jt.randn(b, n, c)
        cls_repr = jt.randn(1, k, c) / c ** 0.5            # logits A = E W^T of unit variance
        inputs, grads = [feats, cls_repr], [jt.randn(b, k, c), jt.randn(*feats.shape)]
    jt.sync(inputs + grads)
    return inputs, grads


def make_fn(case, impl):
    """impl: 'composition' or the operator ('jit' for CARAFE, a strategy name for the attention)."""
    if case['op'] == 'carafe':
        from jseg.ops.carafe import carafe_reference
        from jseg.ops.carafe_kernel import carafe_fused
        k, g, s = case['k'], case['G'], case['s']
        f = carafe_reference if impl == 'composition' else carafe_fused
        return lambda x, m: [f(x, m, k, g, s)]
    if case['op'] == 'resize':
        from jseg.ops.resize_bilinear import resize_bilinear_fused, resize_bilinear_reference
        size, ac = (case['H'], case['W']), case['align_corners']
        f = resize_bilinear_reference if impl == 'composition' else resize_bilinear_fused
        return lambda x: [f(x, size, ac)]
    if case['op'] == 'msda':
        from jseg.ops.ms_deform_attn import ms_deform_attn_reference
        from jseg.ops.ms_deform_attn_kernel import ms_deform_attn_fused
        shapes = tuple(tuple(level) for level in case['levels'])
        f = ms_deform_attn_reference if impl == 'composition' else ms_deform_attn_fused
        return lambda v, loc, a: [f(v, shapes, loc, a)]
    if case['op'] == 'grid_sample':
        from jittor import nn

        from jseg.ops.grid_sample import grid_sample_fused
        if impl == 'composition':
            return lambda x, g: [nn.grid_sample(x, g, mode='bilinear', padding_mode='border', align_corners=False)]
        return lambda x, g: [grid_sample_fused(x, g, 'border', False)]
    if case['op'] == 'softmax':
        import jittor as jt
        from jseg.ops.softmax import softmax_fused, softmax_reference
        f = softmax_reference if impl == 'composition' else softmax_fused
        dim = case['dim']
        weight = jt.ones(1) if case['weighted'] else None      # FreqFusion's default window
        return lambda x: [f(x, dim, weight)]
    if case['op'] == 'gelu':
        from jseg.ops.gelu import gelu, gelu_reference
        f = gelu_reference if impl == 'composition' else gelu
        return lambda x: [f(x)]
    if case['op'] == 'norm':
        from jseg.ops import norm
        if case['kind'] == 'batch':
            f = norm.batch_norm_train_reference if impl == 'composition' else norm.batch_norm_train
            return lambda x, w, b: [f(x, w, b)[0]]
        f = norm.group_norm_reference if impl == 'composition' else norm.group_norm
        return lambda x, w, b: [f(x, case['groups'], w, b)]
    if case['op'] == 'loss':
        from jseg.ops.resize_bilinear import resize_bilinear
        from jseg.ops.softmax_nll import softmax_nll_fused, softmax_nll_reference
        f = softmax_nll_reference if impl == 'composition' else softmax_nll_fused
        size = (case['label_size'], case['label_size'])
        return lambda x, label: [f(resize_bilinear(x, size, False), label, 255).mean()]
    if case['op'] == 'gemm':
        return _gemm_fn(case, impl)
    if case['op'] == 'argmax':
        import jittor as jt

        from jseg.ops.argmax import argmax
        f = (lambda x: jt.argmax(x, 0)) if impl == 'composition' else (lambda x: argmax(x, 0))
        return lambda x: list(f(x))
    from jseg.ops.offset_attention import offset_attention_reference
    from jseg.ops.offset_attention_kernel import offset_attention_fused
    cf = case['channels_first']
    if impl == 'composition':
        return lambda e, w: list(offset_attention_reference(e, w, cf))
    return lambda e, w: list(offset_attention_fused(e, w, cf, strategy=impl))


def _gemm_fn(case, impl):
    import jittor as jt
    from jittor import nn

    from jseg.ops.gemm import gemm_fused, gemm_reference
    ta, tb, kind = case['trans_a'], case['trans_b'], case['kind']
    if impl != 'composition':
        return lambda a, b: [gemm_fused(a, b, ta, tb)]
    if kind == 'matmul':
        return lambda a, b: [gemm_reference(a, b, ta, tb)]
    if kind == 'heads':
        from jseg.models.backbones.efficientformer_v2_utils import _BatchedMatmul
        return lambda a, b: [_BatchedMatmul.apply(a, b)]
    if kind == 'pointwise':
        def pointwise(w, x):
            n, c, hw = x.shape
            y = jt.matmul(w, x.permute(1, 0, 2).reshape(c, n * hw))
            return [y.reshape(w.shape[0], n, hw).permute(1, 0, 2)]
        return pointwise
    def conv(w, x):   # on the square image the (B, Cin, HW) input stands for
        n, c, hw = x.shape
        side = int(round(hw ** 0.5))
        y = nn.conv2d(x.reshape(n, c, side, hw // side), w.reshape(w.shape[0], c, 1, 1))
        return [y.reshape(n, w.shape[0], hw)]
    return conv


def make_call(case, impl, backward, inputs, grads):
    import jittor as jt
    fn = make_fn(case, impl)
    if not backward:
        def fwd():
            with jt.no_grad():
                return fn(*inputs)
        return fwd

    def fwd_bwd():
        outs = fn(*inputs)
        loss = sum((o * g).sum() for o, g in zip(outs, grads))
        return list(outs) + list(jt.grad(loss, inputs[:case.get('differentiable', len(inputs))]))
    return fwd_bwd


def select_cases(args, use_cuda):
    """The (case, implementations) pairs that ``--op``, ``--batch``, ``--strategy`` and ``--layout`` ask for.

    CPU-only operators are left out under CUDA (with a line saying so where the skip is not obvious).
    """
    cases = []
    if args.op in ('carafe', 'all'):
        for b in args.batch or [1]:
            cases += [(_carafe_case(call, b), ['jit']) for call in offseg_t_carafe_calls()]
    strategies = [s for s in args.strategy if not (use_cuda and s == 'fused')]
    if len(strategies) < len(args.strategy):
        print("offset: the 'fused' strategy is a CPU operator; on CUDA only 'gemm' is timed")
    if args.op in ('offset', 'all') and strategies:
        for b in args.batch or [1, 2]:
            cases.append((_offset_case(b, args.layout), strategies))
    if args.op in ('msda', 'all'):
        for b in args.batch or [1, 2]:
            cases.append((_msda_case(b), ['jit']))
    if args.op in ('resize', 'all') and use_cuda:
        print('resize: the bilinear-resize operator is CPU-only (on CUDA resize() runs nn.interpolate); skipped')
    elif args.op in ('resize', 'all'):
        for b in args.batch or [1, 2]:
            cases.append((_resize_case('final resize of the logits', b, 150, 128, 128, 512, 512), ['jit']))
        cases.append((_resize_case('SegFormer-like feature upsampling', 1, 256, 16, 16, 128, 128), ['jit']))
    if args.op in ('grid_sample', 'all') and not use_cuda:   # a CPU-only operator
        for b in args.batch or [1, 2]:
            cases += [(_grid_sample_case(call, b), ['jit']) for call in offseg_t_dysampler_calls()]
    if args.op in ('softmax', 'all') and use_cuda:
        print('softmax: skipped on CUDA (a CPU-only operator: jseg.ops.softmax uses nn.softmax there)')
    elif args.op in ('softmax', 'all'):
        for b in args.batch or [1, 2]:
            cases += [(_softmax_case(call, b), ['jit']) for call in offseg_t_softmax_calls()]
        cases.append((_softmax_case(('last dim', (2, 4096, 4096), -1, False), None), ['jit']))
    if args.op in ('argmax', 'all') and use_cuda:
        print('argmax: skipped on CUDA (a CPU-only operator: jseg.ops.argmax is jt.argmax there)')
    elif args.op in ('argmax', 'all'):
        cases.append((_argmax_case(), ['jit']))
    if args.op in ('loss', 'all') and not use_cuda:   # a CPU-only operator
        cases += [(_loss_case(b), ['jit']) for b in args.batch or [1, 2]]
    if args.op in ('norm', 'all') and not use_cuda:   # CPU-only operators
        for b in args.batch or [1, 2]:
            cases += [(_norm_case('batch', b, 32), ['jit']), (_norm_case('batch', b, 128), ['jit']),
                      (_norm_case('group', b, 256), ['jit'])]
    if args.op in ('gelu', 'all') and not use_cuda:   # a CPU-only operator
        cases += [(_gelu_case(b), ['jit']) for b in args.batch or [1, 2]]
    if args.op in ('gemm', 'all') and not use_cuda:   # a CPU-only operator
        cases += [(_gemm_case(call), ['jit']) for call in offseg_t_gemm_calls()]
    return cases
