"""The benchmark behind ``make bench`` (``manage.py bench``).

It measures this project's server, and optionally a peer (any OpenAI-compatible server such as
llama.cpp's ``llama-server``), through the same OpenAI-compatible streaming endpoint with the
same prompts and the same client, one server at a time, and prints each figure side by side
with the ratio ours/peer.

- ``client``: the streaming HTTP client and per-request metrics (TTFT, inter-token gaps, usage)
- ``prompts``: the texts, distinct per run so no prefix cache carries over between requests
- ``scenarios``: streams, long-prompt, interference, multi-turn, rss
- ``naive``: the plain-transformers baseline (one ``generate`` per request, per thread)
- ``machine``: banner info, the other-processes CPU meter, process memory
- ``report``: figures, ratios, acceptance and the printed tables (pure)
- ``server``: server started by bench, with a temporary API token
- ``cli``: options and the order of the run
- ``soak``: the soak behind ``make soak`` (many clients for minutes, hang-ups, bad requests,
  chat turns through a logged-in session, server RSS sampled)
- ``soak_report``: what a complete answer is, the RSS judgment, the soak's table (pure)
"""
