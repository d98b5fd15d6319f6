"""SSAST pretraining from the backbone's options: the objective (``--objective``, or ``--task pretrain_*`` as the
seeds spelled it), the masks each objective draws (``--cluster_side``: fixed block sides or the seeds' drawn ones)
and the loss each objective trains on."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from audiotune.config import MPG_LOSS_VERSION, PRETRAIN_TASK_CHECKED_VERSION, RunConfig, load_config, save_config
from audiotune.models.backbones import backbone_options, build_backbone, resolve_config
from audiotune.models.backbones.ssast import SSASTBackbone, SSASTOptions
from audiotune.models.backbones.ssast_model import SSASTModel

# a one-block tiny patch model: 4 x 4 patches on 48 mel bins x 48 frames, a 12 x 12 grid
SIDE = 12
MODEL = {"model_size": "tiny", "fshape": 4, "tshape": 4, "input_fdim": 48, "input_tdim": 48, "depth": 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tiny models gain nothing from more on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ssast_config(**options: object) -> RunConfig:
    """The run config of that model, pretraining with the SSAST options given."""
    config = RunConfig()
    config.model.model = "ssast"
    config.features.num_mel_bins, config.features.target_length = 48, 48
    config.model.options = {"model_size": "tiny", "fshape": 4, "tshape": 4, "fstride": 4, "tstride": 4,
                            "task": "pretrain_joint", **options}
    return config


def test_only_the_joint_objective_weighs_the_mse_by_10() -> None:
    """Upstream and the seed trained pretrain_mpg on the MSE itself and pretrain_mpc on the NCE."""
    torch.manual_seed(0)
    model = SSASTModel(**MODEL).eval()
    x = torch.randn(2, 48, 48)
    mpg = model.pretrain_loss(x, "pretrain_mpg", mask_patch=6, rng=random.Random(3))
    torch.testing.assert_close(mpg["loss"], model.mpg(x, mask_patch=6, rng=random.Random(3)))
    assert set(mpg) == {"loss", "mse"} and torch.equal(mpg["loss"], mpg["mse"])
    mpc = model.pretrain_loss(x, "pretrain_mpc", mask_patch=6, rng=random.Random(3))
    torch.testing.assert_close(mpc["loss"], model.mpc(x, mask_patch=6, rng=random.Random(3))[1])
    assert set(mpc) == {"loss", "acc", "nce"}
    joint = model.pretrain_loss(x, "pretrain_joint", mask_patch=6, rng=random.Random(3))
    torch.testing.assert_close(joint["loss"], joint["nce"] + 10 * joint["mse"])


def block_side(mask: list[int]) -> int | None:
    """The side of the one block a mask is (the first ``len(mask)`` patches of a square block, row by row, clear
    of the grid's right and bottom edges, where blocks are clipped), or None when it is not one such block."""
    rows, cols = [i // SIDE for i in mask], [i % SIDE for i in mask]
    if max(rows) == SIDE - 1 or max(cols) == SIDE - 1:
        return None
    side = max(cols) - min(cols) + 1
    block = {(min(rows) + k // side) * SIDE + min(cols) + k % side for k in range(len(mask))}
    return side if set(mask) == block else None


def sides(masks: torch.Tensor) -> set[int | None]:
    """The block sides of the clips' masks that are one unclipped block."""
    return {block_side(mask.tolist()) for mask in masks} - {None}


def pretraining_masks(monkeypatch: pytest.MonkeyPatch, objective: str = "pretrain_mpg", validating: bool = False,
                      **options: object) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The masks (a (60 clips, 9 patches) tensor per masked pass) and the loss of one batch, as `audiotune
    pretrain` draws them from the options given in a training (or validation) step."""
    config = ssast_config(task=objective, mask_patch=9, **options)
    torch.manual_seed(0)
    backbone = SSASTBackbone(SSASTOptions("tiny", 4, 4, 4, 4, input_fdim=48, input_tdim=48, task=objective, depth=1))
    backbone.start_pretraining(objective, config)
    backbone.train(not validating)
    drawn: list[torch.Tensor] = []
    draw = backbone.model.mask_indices

    def recorded(*args: object, **kwargs: object) -> torch.Tensor:  # the masks drawn, passed on unchanged
        drawn.append(draw(*args, **kwargs))  # type: ignore[arg-type]
        return drawn[-1]

    monkeypatch.setattr(backbone.model, "mask_indices", recorded)
    features = torch.randn(60, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.set_grad_enabled(not validating):
        loss = backbone.pretrain_loss({"inputs": features}, objective, rng=random.Random(0))["loss"]
    return drawn, loss.detach()


def test_cluster_side_drawn_gives_each_clip_a_block_of_side_cluster_factor_to_cluster_factor_plus_2(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The SSAST seeds drew each clip's block side as randrange(3) + 3; --cluster_side drawn does so from
    --cluster_factor, the default keeps every block --cluster_factor wide (the masks drawn before the option)."""
    (fixed,), fixed_loss = pretraining_masks(monkeypatch)
    assert sides(fixed) == {3}
    before = SSASTModel(**MODEL).mask_indices(60, 9, None, 3, random.Random(0))
    assert torch.equal(fixed, before)
    assert torch.equal(pretraining_masks(monkeypatch, cluster_side="fixed")[0][0], fixed)
    (drawn,), drawn_loss = pretraining_masks(monkeypatch, cluster_side="drawn")
    assert sides(drawn) == {3, 4, 5} and not torch.equal(drawn_loss, fixed_loss)
    assert sides(pretraining_masks(monkeypatch, cluster_side="drawn", cluster_factor=4)[0][0]) == {4, 5, 6}
    # the joint objective's two passes (classification and generation) both draw their sides
    joint, _ = pretraining_masks(monkeypatch, "pretrain_joint", cluster_side="drawn")
    assert len(joint) == 2 and all(sides(masks) == {3, 4, 5} for masks in joint)
    # validation masks too, as the seed's validation_mask drew them
    assert sides(pretraining_masks(monkeypatch, validating=True, cluster_side="drawn")[0][0]) == {3, 4, 5}


def test_cluster_side_is_recorded_and_a_run_saved_without_it_keeps_fixed_blocks(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    save_config(resolve_config(ssast_config(cluster_side="drawn")), path)
    assert backbone_options(load_config(path)).cluster_side == "drawn"
    earlier = path.read_text().replace("  cluster_side: drawn\n", "")
    assert "cluster_side" not in earlier
    path.write_text(earlier)
    assert backbone_options(load_config(path)).cluster_side == "fixed"
    with pytest.raises(ValueError, match="--cluster_side sometimes: choose one of fixed, drawn"):
        backbone_options(ssast_config(cluster_side="sometimes"))


def test_a_run_written_before_the_mpg_weight_was_the_joint_objectives_alone_keeps_10_x_the_mse() -> None:
    """pretrain_mpg of a run of an earlier config version (resumed) trains and validates on 10 x the MSE, as when it
    was written, so its validation losses stay on one scale; a run of this version on the MSE itself."""
    torch.manual_seed(0)
    features = {"inputs": torch.randn(2, 48, 48)}
    losses = {}
    for version in (MPG_LOSS_VERSION - 1, MPG_LOSS_VERSION):
        config = ssast_config(task="pretrain_mpg", mask_patch=9)
        config.version = version
        backbone = SSASTBackbone(SSASTOptions("tiny", 4, 4, 4, 4, input_fdim=48, input_tdim=48, task="pretrain_mpg",
                                              depth=1))
        torch.manual_seed(1)
        backbone.start_pretraining("pretrain_mpg", config)
        result = backbone.pretrain_loss(features, "pretrain_mpg", rng=random.Random(0))
        losses[version] = (result["loss"].item(), result["mse"].item())
    (earlier, earlier_mse), (now, now_mse) = losses[MPG_LOSS_VERSION - 1], losses[MPG_LOSS_VERSION]
    assert now == pytest.approx(now_mse) and earlier == pytest.approx(10 * earlier_mse)


@pytest.mark.parametrize(("task", "objective", "first"), [
    ("pretrain_mpg", "", "pretrain_mpg"),  # the seeds' spelling of --objective
    ("pretrain_mpc", "pretrain_mpc", "pretrain_mpc"),
    ("ft_cls", "pretrain_mpc", "pretrain_mpc"),
    ("ft_cls", "", "pretrain_joint"),  # neither: the backbone's first
])
def test_the_objective_is_one_option_that_task_may_spell(task: str, objective: str, first: str) -> None:
    config = ssast_config(task=task)
    config.model.objective = objective
    assert SSASTBackbone.pretrain_objectives(config)[0] == first  # from the config alone, as pretrain reads it


def test_a_pretraining_task_naming_another_objective_is_refused_naming_both() -> None:
    config = ssast_config(task="pretrain_mpg")
    config.model.objective = "pretrain_mpc"
    with pytest.raises(ValueError, match="--task pretrain_mpg and --objective pretrain_mpc: two pretraining "
                                         "objectives"):
        resolve_config(config)


def test_a_run_of_an_earlier_version_with_pretrains_default_task_reads_as_its_objective() -> None:
    """pretrain wrote --task pretrain_joint into every SSAST run before the two were checked; such a run's objective
    is the one it trained."""
    config = ssast_config(task="pretrain_joint")
    config.model.objective = "pretrain_mpc"
    config.version = PRETRAIN_TASK_CHECKED_VERSION - 1
    assert SSASTBackbone.pretrain_objectives(config)[0] == "pretrain_mpc"
    assert build_backbone(resolve_config(config), pretrained=False).task == "pretrain_mpc"


def test_a_pretrain_runs_recorded_objective_reads_back_as_the_model_it_trained(tmp_path: Path) -> None:
    """A pretrain run records the objective it trained; read back, its encoder serves that objective (and pools
    its patch tokens), whatever --task says at its default."""
    config = resolve_config(ssast_config(task="ft_cls"))
    config.model.objective = "pretrain_mpc"
    save_config(config, tmp_path / "config.yaml")
    again = resolve_config(load_config(tmp_path / "config.yaml"))
    assert again.model.objective == "pretrain_mpc" and build_backbone(again, pretrained=False).task == "pretrain_mpc"
