"""Users and queues: who works the cases (agents), who sets mail up (admins), and the queues
cases are routed to. The console's accounts, the owners named in templates and alerts, the user
an email service acts as and the queue members a workflow alert goes to all read from here."""
