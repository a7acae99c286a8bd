"""f-CLSWGAN's iteration against the released formulation, written from the authors' training loop
(read for facts, docs/clswgan.md): the critic's loss as three separate backward passes (the real
term with −1, the fake term with +1, the gradient penalty through autograd's double backward, not
the closed form zslfast uses), then the generator's adversarial term plus ``cls_weight`` × the NLL
of the frozen seen classifier's log-softmax on the last critic batch's labels, with fresh noise;
``torch.optim.Adam`` on copies of the starting networks. A tiny float64 case (4 features, 3
attributes, hidden width 5, 3 seen + 2 unseen classes, 3 rows per batch, 2 critic steps), two
iterations with the same draws in the same order. The released formulation is
``tests/oracles/gan_original.py`` (also the benchmark's baseline). Weights are drawn wide (std 0.3) and the loss
weights set apart, so a wrong sign, weight, label mapping or batch moves the weights by about lr."""
import copy

import pytest
import torch

from tests.oracles import gan_original

from zslfast.engine.recipe import Stage, stage_step
from zslfast.eval.classifier import SoftmaxClassifier
from zslfast.models.clswgan import gan_step
from zslfast.nn.vaegan import Critic, Generator
from zslfast.optim import adam

C, A, HIDDEN = 4, 3, 5
SEEN = [0, 2, 3]                  # seen class ids are not 0..S-1: the classifier's targets are positions
Q = {"hidden": HIDDEN, "critic_iters": 2, "lr": 0.01, "beta1": 0.5, "lambda_gp": 7.0, "cls_weight": 0.6}
BATCHES = [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])]  # the generator step reuses the last one


def _case():
    torch.manual_seed(0)
    G = Generator(C, A, A, HIDDEN, output="relu").double()
    D = Critic(C, A, HIDDEN).double()
    clf = SoftmaxClassifier(C, len(SEEN), init="normal").double()
    with torch.no_grad():
        for t in [*G.parameters(), *D.parameters(), *clf.parameters()]:
            t.normal_(0, 0.3)
    clf.requires_grad_(False)
    gx = torch.Generator().manual_seed(5)
    x_all = torch.rand(6, C, generator=gx, dtype=torch.float64)
    y_all = torch.tensor([0, 2, 3, 3, 0, 2])
    att = torch.rand(5, A, generator=gx, dtype=torch.float64)
    return G, D, clf, x_all, y_all, att


def test_two_iterations_equal_the_released_formulation():
    G, D, clf, x_all, y_all, att = _case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    betas = (Q["beta1"], 0.999)
    opt_g2, opt_d2 = gan_original.adam(G2.parameters(), Q["lr"], Q["beta1"]), gan_original.adam(D2.parameters(), Q["lr"], Q["beta1"])
    y_seen = torch.searchsorted(torch.tensor(SEEN), y_all)
    position = {c: i for i, c in enumerate(SEEN)}
    labels = torch.tensor([position[int(c)] for c in y_all])  # the released map_label, written out
    g_code, g_oracle = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    stage = Stage("f-clswgan", {"G": G, "D": D}, {"G": adam(G.parameters(), "cpu", Q["lr"], betas=betas),
                                                 "D": adam(D.parameters(), "cpu", Q["lr"], betas=betas)},
                  None, step=gan_step(x_all, y_all, y_seen, att, Q, g_code), uses={"clf": clf}, epochs=1)
    step = stage_step(stage)
    for it in range(2):
        got = {k: float(v) for k, v in step((0, BATCHES)).items()}
        want = {k: float(v) for k, v in gan_original.clswgan_iteration(G2, D2, clf, opt_g2, opt_d2, x_all, y_all, labels, att,
                                                           BATCHES, Q, g_oracle).items()}
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), (it, k, got, want)
    for (name, p), q in zip([*G.named_parameters(), *D.named_parameters()], [*G2.parameters(), *D2.parameters()]):
        assert torch.allclose(p, q, rtol=0, atol=1e-9), (name, float((p - q).abs().max()))
    assert not torch.equal(G.fc1.weight, _case()[0].fc1.weight)  # it did train


def test_the_generator_output_is_non_negative_as_released():
    G = Generator(C, A, A, HIDDEN, output="relu")
    out = G(torch.randn(64, A), torch.rand(64, A))
    assert (out >= 0).all() and (out == 0).any()  # ReLU, not a sigmoid
