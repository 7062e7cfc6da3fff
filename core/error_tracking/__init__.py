"""Error tracking and alerts (DESIGN.md §5, issue 7 item 2).

Every error response and failed job is counted by code, route or job, and category into a per-process
tally (`tally`), which is flushed now and then into time buckets shared by every process (the
`ErrorLog` port). A sliding window over those buckets (`window`) gives the 5xx rate and the failure
rate per job queue; a threshold rule with a minimum volume and a cooldown (`rules`) decides when to
alert, and the alert (`alerts`) goes to the logs, a gauge and, when configured, a signed ops webhook.
"""
