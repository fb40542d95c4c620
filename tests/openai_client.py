"""The real `openai` Python client against a running `letterpress serve` (tests/serve_process.rs
starts the server and runs this script with its base URL).

    python tests/openai_client.py http://127.0.0.1:PORT
"""

import base64
import io
import sys
import urllib.request

import openai
from PIL import Image

base = sys.argv[1]
client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)

# b64_json: the images come back inline.
result = client.images.generate(
    model="letterpress", prompt="a poster that says 'HELLO'", n=2, size="64x64",
    response_format="b64_json",
)
assert len(result.data) == 2, result
for item in result.data:
    image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
    assert image.size == (64, 64), image.size
    assert item.revised_prompt == "a poster that says 'HELLO'"

# url: the client gets links to /v1/files/{id}, which serve the PNG.
result = client.images.generate(prompt="a poster that says 'URL'", size="64x128")
(item,) = result.data
assert item.url.startswith(f"{base}/v1/files/file_"), item.url
with urllib.request.urlopen(item.url) as response:
    assert response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.read())).size == (64, 128)

# Errors arrive as the client's own exception types, with our message and param.
try:
    client.images.generate(prompt="x", size="100x100")
except openai.BadRequestError as e:
    assert e.status_code == 400
    assert e.body["param"] == "size", e.body
    assert "512x512" in e.body["message"], e.body
else:
    raise AssertionError("size 100x100 was accepted")
try:
    client.images.generate(prompt="x" * 1001)
except openai.BadRequestError as e:
    assert "1 to 1000 characters" in e.body["message"], e.body
else:
    raise AssertionError("a 1001-character prompt was accepted")

print("openai client: ok")
