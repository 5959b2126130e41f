"""The tasks of the speculative-decoding benchmark: three extractive ones (the answer repeats much of the prompt)
and free text (it repeats little), each as chat messages made unique by a tag so no prompt cache answers them;
every side of the benchmark sends the same tags."""

from __future__ import annotations

SOURCES = [
    "[1] The Hollow Creek library opened in 1962 in the old post office building on Main Street. It holds about "
    "40,000 books and a local history room with maps of the valley drawn between 1880 and 1930.",
    "[2] In 2024 the town council approved funding for a new library wing. Construction starts in April and the "
    "wing will add a children's reading room, four study rooms and a workshop for repairing old books.",
    "[3] The library is open from 9 am to 7 pm on weekdays and from 10 am to 4 pm on Saturdays. It is closed on "
    "Sundays and public holidays. Library cards are free for residents of the valley.",
]

ARTICLE = (
    "The committee met on Tuesday to review the annual budget. It approved funding for the new library wing, "
    "postponed the decision on the bridge repairs until the engineers deliver their report, and asked the finance "
    "office to report on parking revenue before the next meeting in March. The mayor said the bridge would stay "
    "open to cars while the engineers finish their survey, but trucks heavier than ten tonnes must use the "
    "northern road. Residents asked for longer opening hours at the swimming pool during the summer; the "
    "committee agreed to try opening until nine in the evening in July and August and to review the costs in "
    "September. Finally, the committee thanked the volunteers who cleaned the river banks in May."
)

CODE = '''import json
from pathlib import Path


def load_orders(path):
    """Reads the orders file: one JSON object per line."""
    orders = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            orders.append(json.loads(line))
    return orders


def total_by_customer(orders):
    totals = {}
    for order in orders:
        customer = order["customer"]
        totals[customer] = totals.get(customer, 0) + order["amount"]
    return totals


def largest_customers(orders, count=3):
    totals = total_by_customer(orders)
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)
    return ranked[:count]


def main():
    orders = load_orders("orders.jsonl")
    for customer, amount in largest_customers(orders):
        print(customer, amount)


if __name__ == "__main__":
    main()
'''

STORY = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def rag_messages(tag: str) -> list[dict[str, str]]:
    system = (
        f"Request {tag}. Answer the question from the sources below. Quote the sentences you use word for word, "
        "each followed by its source number.\n\n" + "\n\n".join(SOURCES)
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": "When is the library open, and what will the new wing add?"},
    ]


def summary_messages(tag: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Request {tag}. Summarise this text, keeping its wording:\n\n{ARTICLE}"}]


def code_messages(tag: str) -> list[dict[str, str]]:
    return [
        {
            "role": "user",
            "content": f"Request {tag}. Rename the function total_by_customer to totals_per_customer in this file "
            f"and answer with the whole file:\n\n```python\n{CODE}```",
        }
    ]


def story_messages(tag: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Request {tag}. {STORY}"}]


TASKS = {
    "RAG answer quoting its sources": (True, rag_messages),
    "summary of a given text": (True, summary_messages),
    "edit of a given code file": (True, code_messages),
    "free text (a story)": (False, story_messages),
}
"""Task -> (extractive?, messages for a tag)."""


def request_tag(task: str, streams: int, client: int, index: int) -> str:
    """The tag of one request of a task's cell: the same for every server and for the engine, which therefore all
    answer the same prompts (a 135M model's greedy answer, and so how much of it drafts can foresee, changes with
    the prompt's wording; different tags on each side made their rates incomparable)."""
    return f"{task[:4]}-{streams}-{client}-{index}"
