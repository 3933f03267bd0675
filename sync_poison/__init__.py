"""Queue trigger on the poison queue: a slice that failed maxDequeueCount times ends its run
as failed and shows the integration in `error` with `lastError`."""
import azure.functions as func

from shared.runs.worker import poisoned


def main(msg: func.QueueMessage) -> None:
    poisoned(msg.get_body())
