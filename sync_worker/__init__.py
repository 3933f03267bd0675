"""Queue trigger: one slice of one run (shared.runs.worker says what happens to each message)."""
import azure.functions as func

from shared.runs.worker import process


def main(msg: func.QueueMessage) -> None:
    process(msg.get_body(), dequeue_count=msg.dequeue_count or 1)
