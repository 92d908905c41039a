#!/usr/bin/env python3
"""Capacity plan for agentwire: gateway replicas, Kafka egress, partitions and archive writers,
from measured per-event costs (docs/operations.md, "Scaling"; the formulas there are the ones
below). Every input has a flag: re-run it with your own measurements.

    python3 scripts/scaling_model.py                        # the table in docs/operations.md
    python3 scripts/scaling_model.py --t-e-us 1.0           # with a cheaper ingest (issue 12)
    python3 scripts/scaling_model.py --c-max 1000           # Cloud Run containerConcurrency
    python3 scripts/scaling_model.py --tail auto            # replicas read only their partitions

  D = E x c                          frames/s delivered, all replicas
  R = max(2, ceil(N / C_max), ceil(D x t_w / (U x P - E x t_e)))
  egress = E x s / k x (R + G + RF - 1)   must stay below B
When E x t_e >= U x P the tail alone fills a replica: no R helps. That is where reading the
whole topic on every replica stops being viable (partition-affine tailing, `--tail auto`, or a
cheaper ingest is needed); the same happens to Kafka when egress exceeds B.

With --tail auto and users routed by partition, the busiest replica serves ceil(Q / R) of
the Q partitions, f = ceil(Q / R) / Q of the topic: its tail, its connections and its writes
are that fraction, not 1/R (12 partitions on 10 replicas put 2/12 of the users on two of
them). Q is provisioned at R at least (Q >= R is the plan; growing it later moves users to
other partitions and invalidates every cursor):
  R = smallest r >= 2 with N x f <= C_max and D x t_w x f <= U x P - E x t_e x f
  egress = E x s / k x (R x f + G + RF - 1)
RSS per replica = its connections x KiB per connection + the recent-log cache + the catch-up
budget (--catchup-buffer-bytes, which a mass reconnect fills).
"""
import argparse
import math


def plan(users, a):
    e = users * a.active_fraction * a.events_per_user  # E: events/s into the topic
    n = users * a.connections_per_user  # N: open connections
    d = e * a.c  # D: frames/s delivered
    budget = a.u * a.p  # cores available per replica
    q = max(12, math.ceil(e / a.events_per_partition))  # partitions
    r_min = max(2, math.ceil(n / a.c_max))
    if a.tail == "all":
        share = 1.0
        tail = e * a.t_e_us / 1e6  # cores every replica spends on the tail
        r = None if tail >= budget else max(r_min, math.ceil(d * a.t_w_us / 1e6 / (budget - tail)))
        conn_share = None if r is None else 1 / r  # any routing spreads connections evenly
    else:
        # The smallest r whose busiest replica (ceil(Q / r) partitions' users) fits: its
        # connections, its share of the tail and its share of the writes.
        r = None
        for candidate in range(2, 10_000_000):
            q_r = max(q, candidate)
            share = math.ceil(q_r / candidate) / q_r
            tail = e * a.t_e_us / 1e6 * share
            if (n * share <= a.c_max and tail < budget
                    and d * a.t_w_us / 1e6 * share <= budget - tail):
                r, q, conn_share = candidate, q_r, share
                break
    egress = None if r is None else e * a.s / a.k * (r * share + a.g + a.rf - 1) / 1e6
    return {
        "users": users,
        "e": e,
        "n": n,
        "tail": tail,
        "r": r,
        "rss_mib": None if r is None else (n * conn_share * a.kib_per_connection / 1024
                                           + a.cache_mib + a.catchup_mib),
        "egress": egress,
        "partitions": q,
        "writers": max(1, math.ceil(e / a.archive_rows_per_writer)),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", default="10000,100000,1000000", help="concurrent users, comma-separated")
    p.add_argument("--active-fraction", type=float, default=0.2, help="share of users with a run in progress")
    p.add_argument("--events-per-user", type=float, default=2.0, help="events/s of a user with a run in progress")
    p.add_argument("--connections-per-user", type=float, default=1.5, help="open tabs per user")
    p.add_argument("--c", type=float, default=1.5, help="sessions per user that receives an event")
    # Measured (docs/benchmarks.md): t_e from issue 12's no-subscriber run after lazy frames
    # (0.8-1.6 µs; the worse figure here), t_w = gateway CPU per delivered frame at 10,000
    # events/s (sections 2 and 8: 28.5-34.9 µs, 30.5-32.4 in section 8's three rounds) minus
    # t_e: 32.4 - 1.6 rounded up.
    p.add_argument("--t-e-us", type=float, default=1.6, help="CPU per event per replica (tail)")
    p.add_argument("--t-w-us", type=float, default=31.0, help="CPU per frame written to one client")
    p.add_argument("--kib-per-connection", type=float, default=7.41, help="RSS per idle connection")
    p.add_argument("--cache-mib", type=float, default=64, help="--cache-bytes")
    p.add_argument("--catchup-mib", type=float, default=64, help="--catchup-buffer-bytes")
    p.add_argument("--archive-rows-per-writer", type=float, default=25000, help="archive rows/s per writer (one PostgreSQL backend each)")
    # Planning choices.
    p.add_argument("--p", type=float, default=2, help="cores per replica")
    p.add_argument("--u", type=float, default=0.6, help="target utilisation")
    p.add_argument("--c-max", type=int, default=15000, help="connections per replica (descriptors, memory)")
    p.add_argument("--s", type=float, default=400, help="average record size in Kafka, bytes")
    p.add_argument("--k", type=float, default=2, help="compression ratio on the wire")
    p.add_argument("--g", type=int, default=2, help="consumer groups (archive, analytics)")
    p.add_argument("--rf", type=int, default=3, help="replication factor")
    p.add_argument("--b-mbs", type=float, default=300, help="usable Kafka egress, MB/s")
    p.add_argument("--events-per-partition", type=float, default=5000, help="events/s per partition")
    p.add_argument("--tail", choices=("all", "auto"), default="all",
                   help="gateway --tail: every replica reads the topic, or only its users' partitions")
    a = p.parse_args()

    print(f"# {a.active_fraction:g} of users active at {a.events_per_user:g} events/s; "
          f"{a.connections_per_user:g} connections per user; t_e {a.t_e_us:g} µs, "
          f"t_w {a.t_w_us:g} µs, {a.kib_per_connection:g} KiB/connection; replica {a.p:g} cores "
          f"at {a.u:.0%}, C_max {a.c_max:,}; Kafka B = {a.b_mbs:g} MB/s; --tail {a.tail}")
    print("| users | E (events/s) | N (connections) | tail per replica (cores) | replicas R "
          "| RSS per replica | Kafka egress (MB/s) | partitions | archive writers |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for users in (int(u) for u in a.users.split(",")):
        r = plan(users, a)
        if r["r"] is None:
            replicas, rss, egress = "**not viable**: the tail fills a replica", "-", "-"
        else:
            replicas = f"{r['r']:,}"
            rss = f"{r['rss_mib']:,.0f} MiB"
            egress = f"{r['egress']:,.0f}" + (" (**over B**)" if r["egress"] > a.b_mbs else "")
        print(f"| {r['users']:,} | {r['e']:,.0f} | {r['n']:,.0f} | {r['tail']:.2f} | {replicas} | "
              f"{rss} | {egress} | {r['partitions']:,} | {r['writers']:,} |")


if __name__ == "__main__":
    main()
