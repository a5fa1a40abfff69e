"""Drive an apiary node with the official `openai` package: plain and streaming.

Usage: openai_client.py BASE_URL API_KEY QUESTION EXPECTED
Exits non-zero (with the reason) if either reply lacks EXPECTED.
"""
import sys

import openai

base, key, question, expected = sys.argv[1:5]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)

models = [m.id for m in client.models.list()]
assert models == ["apiary-swarm"], models

plain = client.chat.completions.create(
    model="apiary-swarm", messages=[{"role": "user", "content": question}]
)
text = plain.choices[0].message.content
assert expected in text, f"plain reply {text!r} lacks {expected!r}"
assert plain.choices[0].finish_reason == "stop", plain.choices[0].finish_reason

chunks = []
stream = client.chat.completions.create(
    model="apiary-swarm",
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
    stream=True,
)
finish = None
for chunk in stream:
    delta = chunk.choices[0].delta
    if delta.content:
        chunks.append(delta.content)
    if chunk.choices[0].finish_reason:
        finish = chunk.choices[0].finish_reason
streamed = "".join(chunks)
assert expected in streamed, f"streamed reply {streamed!r} lacks {expected!r}"
assert finish == "stop", finish

try:
    openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
    raise SystemExit("a wrong API key was accepted")
except openai.AuthenticationError as e:
    assert "API key" in str(e), str(e)

print(f"plain: {text!r}; streamed in {len(chunks)} chunks: {streamed!r}")
