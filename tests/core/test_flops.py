"""MAC counting against hand-computed counts."""
import jittor as jt
from jittor import nn

from jseg.utils.flops import MacCounter, count_parameters


class Net(nn.Module):
    def __init__(self):
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(8, 4)
        self.frozen = jt.ones(5).stop_grad()

    def execute(self, x):
        y = self.dw(self.conv(x))                       # (1, 8, 16, 16)
        t = y.reshape(1, 8, -1).permute(0, 2, 1)        # (1, 256, 8)
        z = self.fc(t)                                  # 256 x 4 x 8 MACs
        a = t @ t.transpose(1, 2)                       # 256 x 256 x 8
        return jt.matmul(a, t), z                       # 256 x 8 x 256


def test_counts_convs_and_matmuls_once():
    net = Net()
    with jt.no_grad(), MacCounter() as counter:
        net(jt.zeros((1, 3, 16, 16)))
    assert counter.conv == 256 * 8 * 27 + 256 * 8 * 9
    assert counter.matmul == 256 * 4 * 8 + 256 * 256 * 8 + 256 * 8 * 256
    assert counter.total == counter.conv + counter.matmul
    assert count_parameters(net) == (8 * 27 + 8) + (8 * 9 + 8) + (4 * 8 + 4)  # stop-grad buffer excluded


def test_patches_are_removed_afterwards():
    before = (nn.Conv.execute, nn.matmul, jt.Var.__matmul__)
    with MacCounter():
        pass
    assert (nn.Conv.execute, nn.matmul, jt.Var.__matmul__) == before
