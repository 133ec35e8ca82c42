"""Pure CRM rules: who the team is, what to log and on which records, stages; no I/O."""
