"""A tenant's people: users, their contact methods and personal notification rules, and who is paged how.

A contact method is one way to reach one person (an email address, a signed webhook, a Slack or Teams incoming
webhook, a PagerDuty routing key); its credentials are encrypted at rest with the contact id bound in, and every
answer shows them as the mask. A personal notification rule says "when I am paged for an alert of at least this
severity, use this contact method after this delay". `paging.get_paging_plan` turns them into the steps a page
takes.

Async functions over a tenant-scoped connection; the caller owns the transaction.
"""
