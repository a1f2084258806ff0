# kl: Kaspersky Threat Intelligence Portal lookups for DNIF. GPL-3.0-or-later.
