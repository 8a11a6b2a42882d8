"""What bench.py sends: the prompts of each figure, the figures themselves, and how delivered tokens are counted."""

from __future__ import annotations

COUNT_METHOD = (
    "usage.completion_tokens of the final chunk where the server sends it (stream_options.include_usage), "
    'else max_tokens when finish_reason is "length", else the number of text-bearing SSE chunks'
)

# Prompts that stories260K continues for well over 256 tokens without an end-of-story token (greedy), so
# every server delivers the full max_tokens; the random 135M model never stops early either.
SINGLE_PROMPTS = (
    "Once upon a time",
    "Once upon a time, there was a little dog named Max.",
    "The sun was shining",
    "Lily and Tom went to the park.",
    "One day, a little bird",
)
CONCURRENT_PROMPTS = (
    "Once upon a time, there was a little girl named Lily.",
    "Once upon a time, there was a big red ball.",
    "Tom had a new toy car.",
    "The cat sat on the mat and looked at the moon.",
    "One day, a boy named Tim found a shiny stone.",
    "Sue liked to play in the garden with her mom.",
    "There was a small fish in a big pond.",
    "Ben and his dad went to the store to buy milk.",
)
CHAT_TURNS = (
    (
        "Can you tell me a story about a cat?",
        "Once upon a time, there was a little cat named Tom. Tom liked to "
        "play in the sun. One day, he saw a big ball in the garden. He ran to the ball and pushed it with his paw.",
    ),
    (
        "What did Tom do next?",
        "Tom played with the ball all day. His friend, a small dog named Spot, came to "
        "play too. They ran and jumped and laughed. When the sun went down, they were very tired and happy.",
    ),
    (
        "Where did they sleep?",
        "They slept in a warm bed by the door. Mom gave them a blanket and a bowl of "
        "milk. Tom and Spot said thank you and closed their eyes.",
    ),
    (
        "Tell me about a bird.",
        "There was a little bird named Sue. Sue lived in a tall tree near the park. "
        "Every morning she sang a happy song, and the children in the park stopped to listen.",
    ),
    (
        "Was Sue ever sad?",
        "One day it rained and Sue could not fly. She felt sad and cold. A kind girl named "
        "Lily saw her and made a little house out of a box. Sue was warm again and sang for Lily.",
    ),
)
# The figures (--figures): single-stream decode, N concurrent streams, the two-turn chat, and a long prompt
# repeated after other traffic has passed through every slot.
FIGURES = ("single", "concurrent", "chat", "repeat")
REPEAT_ANSWER = 8  # max_tokens of the long prompt's answers: TTFT is what is measured
FILLER_WAVES = 2  # waves of `--parallel` concurrent requests between the long prompt and its repeat
CHAT_QUESTION_1 = "Can you tell me one more story?"
CHAT_QUESTION_2 = "Thank you! What happened next?"
