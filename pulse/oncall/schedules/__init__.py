"""On-call schedules in the database: schedules, their layers and overrides, and who is on call when.

The rotation math lives in `pulse.oncall.rotation` and knows nothing of the database; this package loads a
schedule into its types (`common.load_schedule`, which the escalation engine also uses), checks and stores changes
(`schedule`, `layers`, `overrides`), and answers the read models the API shows (`on_call`: who is on call now, a
timeline, a person's upcoming shifts) with the people's emails and names. Services never commit; the caller owns
the transaction.
"""
