"""Fine-tuning by distillation: the pruned model gets closer to the dense one on held-out inputs,
only weight values change, the best held-out weights are written, and a resumed run continues
exactly where an interrupted one stopped."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from spa.core.errors import InputError
from spa.graph import io
from spa.graph.load import load
from spa.training.data_free import data_free
from spa.training.distill import FinetuneConfig, finetune
from spa.training.runners import StudentRunner
from tests.training.models import classifier, pruned_pair


def ort_outputs(path, feeds) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [sess.run(None, f)[0] for f in feeds]


def initializers(model) -> dict[str, np.ndarray]:
    return {name: v.const_value.numpy().copy() for name, v in model.graph.initializers.items()}


@pytest.mark.parametrize("fixed_batch", [False, True], ids=["batched", "one-sample-at-a-time"])
def test_distillation_brings_the_pruned_model_closer_on_held_out_inputs(tmp_path, fixed_batch):
    dense, pruned = pruned_pair(tmp_path, fixed_reshape=fixed_batch)
    teacher, student = load(dense), load(pruned)
    data = data_free(teacher, seed=0)
    result = finetune(student, teacher, data, FinetuneConfig(steps=40, lr=1e-2, batch=8))
    assert result.after.score() >= result.before.score() + 0.25  # top-1 agreement on held-out inputs
    out = io.save(result.model, tmp_path / "tuned.onnx")
    # an independent check of the reported figure: ONNX Runtime on the written file vs the dense file
    d, p = ort_outputs(dense, data.held_out), ort_outputs(out, data.held_out)
    error = np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(d, p)) / sum((a ** 2).sum() for a in d))
    assert abs(error - result.after.relative_error) < 1e-5 * max(1.0, error)
    # the graph is the pruned one: same nodes, names, initializer names, shapes and dtypes; new values
    before, after = load(pruned), load(out)
    assert [(n.op_type, n.name) for n in before.graph] == [(n.op_type, n.name) for n in after.graph]
    old, new = initializers(before), initializers(after)
    assert {k: (v.shape, v.dtype) for k, v in old.items()} == {k: (v.shape, v.dtype) for k, v in new.items()}
    assert any(not np.array_equal(old[k], new[k]) for k in old)


def test_a_fixed_batch_graph_is_run_one_sample_at_a_time(tmp_path):
    from spa.runtime.to_torch import to_torch

    for fixed, expected in ((False, True), (True, False)):
        dense, pruned = pruned_pair(tmp_path, fixed_reshape=fixed)
        data = data_free(load(dense))
        assert StudentRunner(to_torch(pruned), "cpu", data.held_out[:2]).batched is expected


def test_the_best_held_out_weights_are_written_so_a_bad_run_returns_the_input(tmp_path):
    dense, _ = pruned_pair(tmp_path)
    # the dense model as its own student: full agreement to start with, which a huge rate only spoils
    result = finetune(load(dense), load(dense), data_free(load(dense)), FinetuneConfig(steps=5, lr=3.0, batch=4))
    assert result.before.score() == 1.0 and min(h["score"] for h in result.history) < 1.0
    assert result.best_step == 0 and result.after.score() == 1.0
    original = initializers(load(dense))
    assert all(np.array_equal(original[k], v) for k, v in initializers(result.model).items())


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, monkeypatch):
    dense, pruned = pruned_pair(tmp_path)
    teacher = load(dense)
    config = FinetuneConfig(steps=6, lr=1e-2, batch=4)
    whole = initializers(finetune(load(pruned), teacher, data_free(teacher), config).model)

    data = data_free(teacher)
    draw, calls = data._draw, []

    def interrupted(rng):
        calls.append(1)
        if len(calls) > 3 * 4:  # the fourth step's first sample
            raise KeyboardInterrupt
        return draw(rng)

    ckpt = tmp_path / "state.pt"
    resumable = FinetuneConfig(steps=6, lr=1e-2, batch=4, checkpoint=str(ckpt), checkpoint_every_s=0.0, resume=True)
    monkeypatch.setattr(data, "_draw", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune(load(pruned), teacher, data, resumable)
    assert ckpt.is_file()
    resumed = finetune(load(pruned), teacher, data_free(teacher), resumable)
    assert resumed.steps == 6
    again = initializers(resumed.model)
    assert all(np.allclose(whole[k], again[k], rtol=1e-5, atol=1e-7) for k in whole)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    dense, pruned = pruned_pair(tmp_path)
    teacher = load(dense)
    ckpt = tmp_path / "state.pt"
    finetune(load(pruned), teacher, data_free(teacher), FinetuneConfig(steps=1, checkpoint=str(ckpt)))
    with pytest.raises(InputError, match="another model"):
        finetune(load(dense), teacher, data_free(teacher), FinetuneConfig(steps=1, checkpoint=str(ckpt), resume=True))


def test_a_teacher_with_other_inputs_or_outputs_is_refused(tmp_path):
    from tests.corpus.make_corpus import cnn, save

    _, pruned = pruned_pair(tmp_path)
    other = load(save(cnn(), tmp_path / "other.onnx"))
    with pytest.raises(InputError, match="--teacher must be the model it was pruned from"):
        finetune(load(pruned), other, data_free(other), FinetuneConfig(steps=1))


def test_a_language_model_learns_from_its_own_text(tmp_path):
    from tests.flow.test_fidelity import _zoo_llama

    import spa

    dense = load(_zoo_llama())
    result = spa.prune(str(_zoo_llama()), ratio=0.5, criterion="l2")
    data = data_free(dense, sequence=16, pool=8)
    assert data.held_out and "wrote itself" in data.description
    tuned = finetune(result.model, dense, data, FinetuneConfig(steps=12, lr=3e-3, batch=4))
    assert tuned.after.kind == "language model"
    assert tuned.after.relative_error < tuned.before.relative_error


def test_the_api_fine_tunes_a_prune_result_and_leaves_it_as_it_was(tmp_path):
    import spa

    dense, _ = pruned_pair(tmp_path)
    result = spa.prune(str(dense), ratio=0.5, criterion="l2")
    before = initializers(result.model)
    tuned = spa.finetune(result, result, steps=3, lr=1e-2)
    assert tuned.steps == 3 and tuned.model is not result.model
    assert all(np.array_equal(before[k], v) for k, v in initializers(result.model).items())
