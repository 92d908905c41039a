import asyncio, os
from agentwire import Worker

async def main():
    worker = Worker(brokers=os.environ["AGENTWIRE_BROKERS"], agent_name="researcher")
    worker.handle_sigterm(timeout=8)                 # Cloud Run: end open runs, flush, exit
    async with worker.run(user_id="demo-user-1", input="What is Kafka?") as run:
        run.thinking("searching the web")
        async with run.tool("web_search", '{"q": "kafka"}') as call:
            call.output = "Kafka is a distributed log"     # timed: executing -> completed
        for word in "Kafka is a distributed, durable log.".split():
            run.delta(word + " "); await asyncio.sleep(0.2)  # Stop cancels this await
    worker.close()                                   # agent_completed was sent on exit

asyncio.run(main())
