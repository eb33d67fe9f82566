"""The official Anthropic and OpenAI Python SDKs against the meter's drop-in proxy: only base_url and api_key
differ from calling the APIs themselves. Run by tests/meter_sdk.rs, which sets:

  METER_BASE         the stack's URL
  METER_TENANT_KEY   the tenant's API key
  METER_USER         a user on a roomy plan (called as the tenant, /v1/users/{id}/ai/...)
  METER_JWT          an end user's token (called as that user, /v1/me/ai/...)
  METER_BROKE_USER   a user whose plan has no tokens left (402)
  METER_RATE_USER    a user whose plan allows one call a minute (429)

Prints one JSON object with what the SDKs returned and raised.
"""

import json
import os
import sys

try:
    import anthropic
    import openai
except ImportError as e:
    print(f"the LLM SDKs are not installed in this Python ({e}); run ./dev test (or ./dev up), which installs "
          "infra/requirements.txt into .venv", file=sys.stderr)
    sys.exit(3)

BASE = os.environ["METER_BASE"].rstrip("/")
KEY = os.environ["METER_TENANT_KEY"]


def claude(prefix, api_key):
    return anthropic.Anthropic(base_url=f"{BASE}{prefix}/ai/anthropic", api_key=api_key, max_retries=0)


def gpt(prefix, api_key):
    return openai.OpenAI(base_url=f"{BASE}{prefix}/ai/openai/v1", api_key=api_key, max_retries=0)


def anthropic_calls(client, label):
    out = {}
    raw = client.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=100,
        messages=[{"role": "user", "content": f"{label}: hello [sandbox:tokens=6,cache_read=12]"}])
    m = raw.parse()
    out["create"] = {
        "type": m.type, "model": m.model, "stop_reason": m.stop_reason, "text": m.content[0].text,
        "usage": m.usage.model_dump(), "remaining": raw.headers.get("x-tenantry-tokens-remaining"),
    }
    with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=100,
            messages=[{"role": "user", "content": f"{label}: stream please [sandbox:tokens=9]"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    out["stream"] = {
        "text": text, "final_text": final.content[0].text, "stop_reason": final.stop_reason,
        "usage": final.usage.model_dump(),
    }
    return out


def openai_calls(client, label):
    out = {}
    c = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"{label}: hi [sandbox:tokens=4,cache_read=8]"}])
    out["create"] = {
        "object": c.object, "model": c.model, "finish_reason": c.choices[0].finish_reason,
        "text": c.choices[0].message.content, "usage": c.usage.model_dump(),
    }
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", stream=True,
        messages=[{"role": "user", "content": f"{label}: stream [sandbox:tokens=7]"}]))
    out["stream"] = {
        "text": "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices),
        "finish_reason": next((ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason), None),
        "usage_chunks": sum(1 for ch in chunks if ch.usage is not None),
    }
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": f"{label}: stream with usage [sandbox:tokens=5]"}]))
    out["stream_with_usage"] = {
        "text": "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices),
        "usage": chunks[-1].usage.model_dump() if chunks and chunks[-1].usage else None,
    }
    return out


def raised(call):
    """What an SDK call raised: the exception's class, status and error body; None when it returned."""
    try:
        call()
    except (anthropic.APIStatusError, openai.APIStatusError) as e:
        return {
            "class": type(e).__name__,
            "module": type(e).__module__.split(".")[0],
            "status_code": e.status_code,
            # OpenAI's SDK keeps the body's `error` object as `body` and its `code` as `e.code`.
            "body": e.body,
            "code": getattr(e, "code", None),
            "retry_after": e.response.headers.get("retry-after"),
            "reset": e.response.headers.get("x-tenantry-budget-reset"),
        }
    return None


def main():
    user = f"/v1/users/{os.environ['METER_USER']}"
    jwt = os.environ["METER_JWT"]
    results = {
        "as_tenant": {"anthropic": anthropic_calls(claude(user, KEY), "tenant"),
                      "openai": openai_calls(gpt(user, KEY), "tenant")},
        "as_end_user": {"anthropic": anthropic_calls(claude("/v1/me", jwt), "end user"),
                        "openai": openai_calls(gpt("/v1/me", jwt), "end user")},
    }
    broke = f"/v1/users/{os.environ['METER_BROKE_USER']}"
    msg = [{"role": "user", "content": "one more"}]
    results["budget_exhausted"] = {
        "anthropic": raised(lambda: claude(broke, KEY).messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=msg)),
        "openai": raised(lambda: gpt(broke, KEY).chat.completions.create(model="gpt-4o-mini", messages=msg)),
        "anthropic_stream": raised(lambda: claude(broke, KEY).messages.stream(
            model="claude-haiku-4-5", max_tokens=10, messages=msg).__enter__()),
    }
    rate = claude(f"/v1/users/{os.environ['METER_RATE_USER']}", KEY)
    first = raised(lambda: rate.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=msg))
    results["rate_limited"] = {
        "first": first,
        "second": raised(lambda: rate.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=msg)),
    }
    results["versions"] = {"anthropic": anthropic.__version__, "openai": openai.__version__}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
