"""LR schedules against the closed form of linear warm-up followed by poly decay."""
import pytest

from jseg.runner.lr_scheduler import build_schedulers


class FakeOptimizer:
    def __init__(self, lrs):
        self.param_groups = [dict(lr=lr) for lr in lrs]


def closed_form(i, base, start, warmup, end, power, eta_min):
    if i < warmup:
        return base * (start + (1 - start) * i / (warmup - 1))
    if i < end:
        return (base - eta_min) * (1 - (i - warmup) / (end - warmup - 1)) ** power + eta_min
    return eta_min


@pytest.mark.parametrize('power,eta_min', [(1.0, 0.0), (0.9, 1e-4)])
def test_warmup_then_poly_matches_closed_form(power, eta_min):
    base, start, warmup, end = 6e-5, 1e-6, 15, 200
    opt = FakeOptimizer([base, 10 * base])
    scheds = build_schedulers(opt, [
        dict(type='LinearLR', start_factor=start, by_epoch=False, begin=0, end=warmup),
        dict(type='PolyLR', eta_min=eta_min, power=power, by_epoch=False, begin=warmup, end=end)])
    seen = {}
    for i in range(end + 5):
        seen[i] = [g['lr'] for g in opt.param_groups]  # lr used at iteration i
        scheds.step()
    for i in (0, 1, 7, 14, 15, 16, 100, 198, 199, 203):
        expect = closed_form(i, base, start, warmup, end, power, eta_min)
        assert seen[i][0] == pytest.approx(expect, rel=1e-9, abs=1e-15)
        expect_head = closed_form(i, 10 * base, start, warmup, end, power, eta_min)
        assert seen[i][1] == pytest.approx(expect_head, rel=1e-9, abs=1e-15)
    assert seen[0][0] == pytest.approx(base * start)
    assert seen[14][0] == pytest.approx(base)  # warm-up reaches the base lr on its last step


def test_scheduler_state_round_trip():
    cfg = [dict(type='LinearLR', start_factor=0.1, begin=0, end=10),
           dict(type='PolyLR', power=1.0, begin=10, end=50)]
    opt_a = FakeOptimizer([1.0])
    a = build_schedulers(opt_a, cfg)
    for _ in range(23):
        a.step()
    opt_b = FakeOptimizer([1.0])
    b = build_schedulers(opt_b, cfg)
    b.load_state_dict(a.state_dict())
    opt_b.param_groups[0]['lr'] = opt_a.param_groups[0]['lr']
    for _ in range(10):
        a.step()
        b.step()
        assert opt_a.param_groups[0]['lr'] == opt_b.param_groups[0]['lr']


def test_by_epoch_is_rejected():
    with pytest.raises(ValueError, match='by_epoch=False'):
        build_schedulers(FakeOptimizer([1.0]), dict(type='PolyLR', by_epoch=True))
