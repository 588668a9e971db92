"""Shared fixtures: one data folder per test session, so each tiny dataset is generated once."""

import pytest

from configs import listops


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tensorflow_datasets"))


@pytest.fixture
def tiny_listops(data_dir):
    """The tiny ListOps config, shortened further for tests, writing data to the session folder."""
    config = listops.get_config("size=tiny")
    config.data_dir = data_dir
    config.task_options.update(num_train=400, num_val=64, num_test=64)
    config.num_train_steps = 20
    config.log_every_steps = 5
    config.eval_every_steps = 10
    config.eval_batch_size = 48
    return config


@pytest.fixture
def resumable(tiny_listops):
    """tiny_listops for stop-and-resume tests: 12 steps, a log every 3, an evaluation every 6, a
    checkpoint every 4, and dropout on, whose randomness a resume must restore too."""
    config = tiny_listops
    config.num_train_steps = 12
    config.log_every_steps = 3
    config.eval_every_steps = 6
    config.checkpoint_every_steps = 4
    config.model.dropout_rate = 0.1
    return config
