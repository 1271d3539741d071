"""`evaluate` on a fine-tuned run: the test records' labels must be the model's, and results on
other test data get their own file instead of replacing the run's `results.json`."""

import json

import pytest

from vdim_tf import evaluate, finetune
from vdim_tf.data import augment as augment_lib


@pytest.fixture(scope="module")
def run(tiny_synthetic, tmp_path_factory):
    """A 1-step fine-tuning run of the CPU preset on the 2-class `tiny_synthetic`."""
    model_dir = tmp_path_factory.mktemp("finetune")
    finetune.finetune(finetune.FinetuneConfig(
        train_data=str(tiny_synthetic / "train" / "*.tfrecord"),
        test_data=str(tiny_synthetic / "test" / "*.tfrecord"),
        model_dir=str(model_dir), train_steps=1, batch_size=4,
        label_names=finetune.read_labels(str(tiny_synthetic / "labels.txt")),
        classifier=finetune.ClassifierConfig(encoder_preset="cpu", embedding_dim=32, num_views=1, hidden_units=32),
        final_length=16, augment=augment_lib.AugmentConfig(output_size=64), decay_every=0,
    ), progress=False)
    return model_dir


def _evaluate(model_dir, test_data=None):
    return evaluate.evaluate_run(str(model_dir), test_data, retrieval=False, projector_videos=0, progress=False)


def test_records_with_more_classes_than_the_model_are_refused_naming_both_lists(run, labelled_records):
    names = json.loads((run / "config.json").read_text())["label_names"]
    test = labelled_records("test", [(0, names[0]), (1, names[1]), (2, "extra")])
    with pytest.raises(ValueError, match=rf"label index 2 is past the 2 names.*Records: 0={names[0]}, "
                                         rf"1={names[1]}, 2=extra; .*: 0={names[0]}, 1={names[1]}$"):
        _evaluate(run, test)
    assert not list(run.glob("results*.json"))


def test_records_whose_names_differ_from_the_model_are_refused(run, labelled_records):
    test = labelled_records("other", [(0, "walk"), (1, "run")])
    with pytest.raises(ValueError, match=r"index 0 is 'walk' in the records but '\w+'"):
        _evaluate(run, test)
    assert not list(run.glob("results*.json"))


def test_results_on_other_test_data_go_to_their_own_file_and_leave_results_json_alone(run, tiny_synthetic):
    own = _evaluate(run)
    assert own["results_file"] == str(run / "results.json")
    before = (run / "results.json").read_text()
    other = _evaluate(run, str(tiny_synthetic / "train" / "*.tfrecord"))
    assert (run / "results.json").read_text() == before
    name = other["results_file"].rsplit("/", 1)[1]
    assert name.startswith(f"results_{tiny_synthetic.name}_train-") and name.endswith(".json"), name
    written = json.loads((run / name).read_text())
    assert written["test_data"] == str(tiny_synthetic / "train" / "*.tfrecord") and written["videos"] == 8
    assert (run / name.replace("results_", "eval_").removesuffix(".json")).is_dir()
