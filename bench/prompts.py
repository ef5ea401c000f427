"""What the benchmark asks: story prompts, long varied story text, multi-turn follow-ups.

Every text carries a tag (``run``) that is different for each run, scenario and request, so
no prefix cache (ours or the peer's) can reuse anything across requests beyond the chat
template's fixed start; both systems get exactly the same texts for the same tag.
"""
from __future__ import annotations

import random

# Open-ended prompts that elicit long answers; request i of a level uses topic i.
TOPICS = (
    "a lighthouse keeper who finds a message in a bottle",
    "a robot learning to paint in an abandoned city",
    "two rival bakers in a small mountain village",
    "a young astronomer who discovers a new comet",
    "a cat who becomes the mayor of a seaside town",
    "a librarian guarding a book that rewrites itself",
    "a sailor lost in a storm near an unknown island",
    "a child who can talk to the trees in her garden",
    "an old clockmaker whose clocks predict the weather",
    "a desert caravan searching for a hidden oasis",
    "a musician who hears melodies in the rain",
    "a detective solving a mystery on a night train",
    "a dragon who is afraid of the dark",
    "a farmer who grows a pumpkin the size of a house",
    "a group of friends building a raft to cross a lake",
    "a chef cooking for a king who has lost his sense of taste",
)
FOLLOW_UPS = (
    "What happens next? Continue the story.",
    "Describe the main character's biggest fear and where it comes from.",
    "Now tell the same part of the story from the point of view of a minor character.",
    "Add a surprising twist that changes everything so far.",
    "How does it end? Write the final scene.",
    "Describe the place where it all happens, in detail.",
    "What did the characters learn? Summarize it in a few sentences.",
)
# Building blocks of the long, varied story text (tokenizers differ; all of it is plain English).
_NAMES = ("Mara", "Tobias", "Elena", "Kofi", "Ingrid", "Ravi", "Lucia", "Henrik", "Amara", "Jonas", "Yuki", "Pedro")
_WHEN = ("At dawn", "Later that morning", "Around noon", "In the afternoon", "As the sun went down", "At midnight",
         "The next day", "Weeks later", "Before anyone woke", "During the storm", "After the market closed")
_DID = ("walked along", "carefully repaired", "quietly painted", "searched every corner of", "sang about",
        "wrote a long letter about", "argued loudly over", "slowly explored", "drew a map of", "dreamed of")
_WHAT = ("the old harbour", "a broken windmill", "the northern forest", "a forgotten library", "the copper bridge",
         "a narrow mountain pass", "the flooded meadow", "an empty theatre", "the glass greenhouse", "a quiet chapel")
_WHY = ("because a stranger had asked for help", "hoping to find the missing key", "while the bells rang in the town",
        "although nobody believed the rumours", "so that the children could sleep in peace",
        "without telling a single friend", "as the river rose higher and higher", "to keep an old promise")
_THEN = ("A gull circled overhead.", "Somewhere a dog barked twice.", "The wind smelled of salt and pine.",
         "Nobody noticed the small green door.", "The lanterns flickered and went out.",
         "It was colder than anyone remembered.", "A bell rang somewhere far away.", "")
# Characters per token of this text: measured 4.6 with SmolLM2's tokenizer; Llama-style ones are
# close. Only a target: each server reports its own prompt_tokens, which is what gets used.
CHARS_PER_TOKEN = 4.6


def prompt_for(index: int, run: str) -> str:
    """The prompt of request ``index`` (distinct topics, each asking for a long answer)."""
    topic = TOPICS[index % len(TOPICS)]
    return (f"[{run}] Write a long, detailed story about {topic}. "
            "Describe the characters, the places and every event.")


def story_text(approx_tokens: int, run: str) -> str:
    """About ``approx_tokens`` tokens of varied story sentences, seeded by ``run``."""
    rng = random.Random(run)
    target_chars = int(approx_tokens * CHARS_PER_TOKEN)
    parts: list[str] = []
    length = 0
    while length < target_chars:
        sentence = (f"{rng.choice(_WHEN)}, {rng.choice(_NAMES)} {rng.choice(_DID)} {rng.choice(_WHAT)} "
                    f"{rng.choice(_WHY)}. {rng.choice(_THEN)}").strip()
        parts.append(sentence)
        length += len(sentence) + 1
    return " ".join(parts)


def long_prompt(approx_tokens: int, run: str) -> str:
    """A user message of about ``approx_tokens`` tokens: story text and a question about it."""
    question = "\n\nWho appears most often in the story above? Answer with one name."
    return f"[{run}] Read this story.\n\n" + story_text(max(1, approx_tokens - 30), run) + question


def first_turn(run: str, approx_tokens: int = 300) -> str:
    """The opening message of the multi-turn conversation."""
    return (f"[{run}] Here is the beginning of a story.\n\n{story_text(approx_tokens, run)}\n\n"
            "Continue it with a new scene.")


def follow_up(turn: int) -> str:
    """The user message of turn ``turn`` (2, 3, ...) of the multi-turn conversation."""
    return FOLLOW_UPS[(turn - 2) % len(FOLLOW_UPS)]
