"""Training runs on every x86-64 CPU: no layer of ours may reach a broken oneDNN kernel.

PyTorch's oneDNN weight-gradient kernel for a strided 1x1 convolution on a channels_last input with 2-7
channels (AVX2 CPUs; 2-15 at larger sizes with AVX-512) writes out of bounds: "double free or corruption",
a segfault, a hang (3 -> 16 channels at 32x32) or a silently wrong weight gradient (7 channels). MobileOne's
stem scale branch is that layer, so it is computed by :class:`StridedPointwiseConv2d` instead.

The checks run in a subprocess with ``ONEDNN_MAX_CPU_ISA=AVX2`` (the kernels an AVX2-only CPU gets, also
on an AVX-512 machine) and a timeout, so a native crash or a hang fails one test instead of the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilevision.layers import MobileOneBlock, StridedPointwiseConv2d

SCRIPT = textwrap.dedent("""
    import torch, torch.nn.functional as F
    from mobilevision.layers import StridedPointwiseConv2d
    from mobilevision.models import create_classifier

    torch.manual_seed(0)
    cl = torch.channels_last
    # the raw pattern: stride-2 1x1 conv, 2-7 input channels, channels_last, weight and input gradients
    for cin, cout, size in [(3, 48, 64), (3, 16, 32), (7, 48, 64), (2, 8, 33)]:
        conv = StridedPointwiseConv2d(cin, cout, 2).to(memory_format=cl)
        x = torch.randn(2, cin, size, size).contiguous(memory_format=cl).requires_grad_()
        y = conv(x)
        g = torch.randn_like(y)
        (y * g).sum().backward()
        x64, w64 = x.detach().double().requires_grad_(), conv.weight.detach().double().requires_grad_()
        ref = F.conv2d(x64, w64, stride=2)  # float64 reference: no oneDNN kernel
        ref_gx, ref_gw = torch.autograd.grad(ref, (x64, w64), g.double())
        torch.testing.assert_close(y.double(), ref.detach(), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(conv.weight.grad.double(), ref_gw, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(x.grad.double(), ref_gx, rtol=1e-4, atol=1e-4)
    # the model whose stem is that layer, trained with channels_last
    model = create_classifier("mobileone_s0", num_classes=5).train().to(memory_format=cl)
    loss = model(torch.randn(2, 3, 64, 64).contiguous(memory_format=cl)).logsumexp(1).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    print("ok")
""")


def test_channels_last_training_on_avx2_kernels():
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("hung: a oneDNN kernel loops forever (see the module docstring)")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (
        f"exit status {proc.returncode} (negative: killed by that signal)\n{proc.stdout}\n{proc.stderr[-3000:]}")


@pytest.mark.parametrize("groups,size", [(1, 9), (4, 10)])
def test_strided_pointwise_conv_is_a_strided_1x1_conv(groups, size):
    """Same output, gradients, parameter names and shapes as ``nn.Conv2d(c, o, 1, 2)``, odd sizes included."""
    ours = StridedPointwiseConv2d(8, 12, 2, groups)
    ref = nn.Conv2d(8, 12, 1, 2, groups=groups, bias=False)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, size, size + 3)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    assert ya.shape == yb.shape == (2, 12, (size + 1) // 2, (size + 4) // 2)
    torch.testing.assert_close(ya, yb)
    g = torch.randn_like(ya)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)


def test_mobileone_stem_uses_it_and_folds():
    """The stem's strided scale branch avoids the kernel (the depthwise ones reach a sound, faster one);
    folding still gives one 3x3 stride-2 conv with the same eval output."""
    block = MobileOneBlock(3, 48, 3, 2, num_branches=2)
    assert isinstance(block.scale[0], StridedPointwiseConv2d) and block.scale[0].stride == (2, 2)
    assert not isinstance(MobileOneBlock(16, 16, 3, 2, groups=16).scale[0], StridedPointwiseConv2d)
    assert not isinstance(MobileOneBlock(16, 16, 3, 1).scale[0], StridedPointwiseConv2d)
    with torch.no_grad():
        for bn in (block.scale[1], *(b[1] for b in block.branches)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    block.eval()
    x = torch.randn(2, 3, 17, 17)
    expected = F.relu(sum(b(x) for b in block.branches) + block.scale[1](F.conv2d(x, block.scale[0].weight, stride=2)))
    torch.testing.assert_close(block(x), expected)
    block.reparameterize()
    assert block.reparam_conv.kernel_size == (3, 3) and block.reparam_conv.stride == (2, 2)
    torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-5)
