"""The wire format: what is accepted, what is refused (status + the field named), what comes back."""

from __future__ import annotations

import json

import pytest

from ftcloud_train.serving.protocol import (
    Generation,
    RequestError,
    adapter_from_custom_attributes,
    chat_response,
    generate_response,
    parse_request,
)


def _refused(body) -> RequestError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(RequestError) as info:
        parse_request(raw)
    return info.value


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, None),
        (b"\xff\xfe", 400, None),
        ([1, 2], 422, "body"),
        ({}, 422, "inputs"),
        ({"inputs": 3}, 422, "inputs"),
        ({"inputs": []}, 422, "inputs"),
        ({"inputs": ""}, 422, "inputs"),
        ({"inputs": ["a"] * 65}, 422, "inputs"),
        ({"inputs": "hi", "parameters": {"temperature": -1}}, 422, "parameters.temperature"),
        ({"inputs": "hi", "parameters": {"top_p": 1.5}}, 422, "parameters.top_p"),
        ({"inputs": "hi", "parameters": {"max_new_tokens": 0}}, 422, "parameters.max_new_tokens"),
        ({"inputs": "hi", "parameters": {"max_tokens": 5}}, 422, "parameters.max_tokens"),  # a typo is not ignored
        ({"inputs": "hi", "parameters": {"stop": [""]}}, 422, "parameters.stop[0]"),
        ({"inputs": ["a", "b"], "stream": True}, 422, "stream"),  # a stream answers one prompt
        ({"inputs": "hi", "stream": "maybe"}, 422, "stream"),
        ({"messages": []}, 422, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, 422, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, 422, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, 422, "n"),
    ],
)
def test_bad_requests_are_refused_with_their_status_and_field(body, status, field):
    err = _refused(body)
    assert err.status == status
    assert err.field == field
    if field:
        assert err.message.startswith(f"{field}: ") and err.body()["field"] == field


def test_tgi_request_becomes_one_task_per_input_with_shared_settings():
    parsed = parse_request(json.dumps({"inputs": ["a", "b"], "parameters": {
        "max_new_tokens": 5, "stop": "END", "adapter_id": "second", "details": True}}).encode())
    assert parsed.kind == "generate" and [t.text for t in parsed.tasks] == ["a", "b"]
    s = parsed.tasks[0].sampling
    assert (s.max_new_tokens, s.stop, s.do_sample) == (5, ("END",), False)
    assert {t.adapter for t in parsed.tasks} == {"second"}


def test_adapter_comes_from_the_custom_attributes_header_unless_the_body_names_one():
    assert adapter_from_custom_attributes("trace=1, adapter=fr ;x=y") == "fr"
    assert adapter_from_custom_attributes("adapter=") is None and adapter_from_custom_attributes(None) is None
    by_header = parse_request(b'{"inputs": "x"}', "adapter=fr")
    assert by_header.tasks[0].adapter == "fr"
    by_body = parse_request(b'{"inputs": "x", "parameters": {"adapter_id": "de"}}', "adapter=fr")
    assert by_body.tasks[0].adapter == "de"


def test_sampling_knobs_split_batches_only_when_sampling():
    def key(params):
        return parse_request(json.dumps({"inputs": "x", "parameters": params}).encode()).tasks[0].sampling.batch_key()

    # Greedy requests batch together whatever their length, stops or (ignored) sampling knobs.
    assert key({}) == key({"max_new_tokens": 3, "stop": ["."], "temperature": 0.7, "top_k": 5})
    assert key({}) != key({"repetition_penalty": 1.3})
    assert key({"do_sample": True, "temperature": 0.7}) != key({"do_sample": True, "temperature": 0.9})
    assert key({"do_sample": True, "temperature": 0}) == key({})  # temperature 0 is greedy
    assert key({"do_sample": True, "seed": 7}) is None  # a seeded sample runs alone, so it is reproducible


def test_chat_is_greedy_unless_temperature_is_positive():
    chat = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 4}
    parsed = parse_request(json.dumps(chat).encode())
    task = parsed.tasks[0]
    assert task.messages == (("user", "hi"),) and task.sampling.deterministic and task.sampling.max_new_tokens == 4
    hot = parse_request(json.dumps({**chat, "temperature": 0.8}).encode()).tasks[0]
    assert hot.sampling.do_sample and hot.sampling.temperature == 0.8


def test_responses_have_the_shapes_clients_expect():
    result = Generation(text=" blue", finish_reason="stop", prompt_tokens=4, completion_tokens=2)
    tgi = parse_request(b'{"inputs": "sky is", "parameters": {"details": true, "return_full_text": true}}')
    assert generate_response(tgi, [result]) == [{"generated_text": "sky is blue", "details": {
        "finish_reason": "stop", "generated_tokens": 2, "prompt_tokens": 4, "seed": None}}]
    chat = parse_request(b'{"messages": [{"role": "user", "content": "sky?"}]}')
    body = chat_response(chat, result, "tiny")
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": " blue"}, "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def test_nothing_heavy_is_imported_before_the_port_is_bound():
    import subprocess
    import sys

    code = ("import sys; import ftcloud_train.entrypoint, ftcloud_train.serving.server; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'fastapi', 'uvicorn', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
