"""The server's environment knobs: contract defaults, SageMaker's port variable, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftcloud.contract import SERVE_ENV_DEFAULTS
from ftcloud_train.serving.settings import ServeSettings, SettingsError


def test_defaults_come_from_the_contract_and_sagemaker_sets_the_port():
    s = ServeSettings.from_env({"SAGEMAKER_BIND_TO_PORT": "9001", "FTCLOUD_ML_ROOT": "/srv/ml"})
    assert (s.port, s.host, s.model_dir) == (9001, "0.0.0.0", Path("/srv/ml/model"))
    assert s.max_batch_size == int(SERVE_ENV_DEFAULTS["FTCLOUD_MAX_BATCH_SIZE"]) == 8
    assert (s.max_wait_ms, s.max_queue, s.request_timeout_s) == (10, 64, 55)
    assert (s.cache_size, s.cache_ttl_s, s.base_model, s.load_in) == (1024, 600, None, "auto")
    assert ServeSettings.from_env({}).port == 8080
    local = ServeSettings.from_env({"FTCLOUD_SERVE_HOST": "127.0.0.1", "FTCLOUD_LOAD_IN": "4BIT"}, port=0)
    assert (local.host, local.port, local.load_in) == ("127.0.0.1", 0, "4bit")


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"FTCLOUD_MAX_BATCH_SIZE": "eight"}, "FTCLOUD_MAX_BATCH_SIZE"),
        ({"FTCLOUD_MAX_BATCH_SIZE": "0"}, "FTCLOUD_MAX_BATCH_SIZE"),
        ({"FTCLOUD_CACHE_SIZE": "-1"}, "FTCLOUD_CACHE_SIZE"),
        ({"FTCLOUD_LOAD_IN": "2bit"}, "FTCLOUD_LOAD_IN"),
        ({"SAGEMAKER_BIND_TO_PORT": "http"}, "SAGEMAKER_BIND_TO_PORT"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(env, names):
    with pytest.raises(SettingsError, match=names):
        ServeSettings.from_env(env)
