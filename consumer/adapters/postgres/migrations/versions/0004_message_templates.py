"""Templates as data: message_templates (versioned, per locale), seeded with the
texts of the code (English and French); the user's locale; the locale and
version of the template an executed follow-up was rendered from.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

A new version per edit, never an UPDATE: every text ever sent stays on record.
The seed is written out here, not imported: a revision stays what it was when
it shipped, whatever the code's texts become. New columns are nullable without
default, so the previous release's code keeps working beside them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# (template_id, locale, body): version 1 of each.
SEED = [
    (
        "post_event_high_emotion",
        "en",
        (
            "Hi! 🎉 We hope your event on {event_date} was wonderful!\n\nWe'd love "
            "to hear how it went. Did everything meet your expectations? Any "
            "highlights or feedback you'd like to share?\n\nLooking forward to "
            "hearing from you!"
        ),
    ),
    (
        "post_event_neutral_emotion",
        "en",
        (
            "Hello! We're checking in about your event on {event_date}.\n\nHow did "
            "it go? Your feedback helps us serve you better.\n\nReach out any time "
            "if you have questions or are planning another event."
        ),
    ),
    (
        "post_event_low_emotion",
        "en",
        (
            "Hi there. We're following up on your event from {event_date}.\n\nYou "
            "mentioned some concerns when we spoke, and we want to be sure "
            "everything went smoothly. If anything fell short, please tell us: we "
            "want to make it right."
        ),
    ),
    (
        "reengagement_general",
        "en",
        (
            "Hi! It's been a while ({days_inactive} days) since we last talked.\n\n"
            "Are you planning an event soon? We have new menus and services you "
            "might like, and we're happy to help."
        ),
    ),
    (
        "reengagement_past_customer",
        "en",
        (
            "Hello! We hope you're doing well.\n\nWe loved being part of your last "
            "event and would be glad to help with the next one. As a returning "
            "customer, ask us about special arrangements."
        ),
    ),
    (
        "emotion_check_in",
        "en",
        (
            "Hi, we wanted to check in with you.\n\nIt sounded like something was "
            "bothering you in our last conversation. Is there anything we can "
            "clarify or fix? We're here to help."
        ),
    ),
    ("custom", "en", "{custom_message}"),
    (
        "post_event_high_emotion",
        "fr",
        (
            "Bonjour\xa0! 🎉 Nous espérons que votre événement du {event_date} a "
            "été merveilleux\xa0!\n\nNous aimerions beaucoup savoir comment il "
            "s'est passé. Tout a-t-il été à la hauteur de vos attentes\xa0? Des "
            "moments forts ou des remarques à nous faire partager\xa0?\n\nAu "
            "plaisir de vous lire\xa0!"
        ),
    ),
    (
        "post_event_neutral_emotion",
        "fr",
        (
            "Bonjour\xa0! Nous revenons vers vous au sujet de votre événement du "
            "{event_date}.\n\nComment s'est-il passé\xa0? Votre avis nous aide à "
            "mieux vous servir.\n\nN'hésitez pas à nous écrire si vous avez des "
            "questions ou si vous préparez un autre événement."
        ),
    ),
    (
        "post_event_low_emotion",
        "fr",
        (
            "Bonjour. Nous revenons vers vous au sujet de votre événement du "
            "{event_date}.\n\nVous nous aviez fait part de quelques inquiétudes "
            "lors de nos échanges, et nous voulons nous assurer que tout s'est "
            "bien passé. Si quelque chose n'a pas été à la hauteur, "
            "dites-le-nous\xa0: nous tenons à arranger les choses."
        ),
    ),
    (
        "reengagement_general",
        "fr",
        (
            "Bonjour\xa0! Cela fait un moment ({days_inactive} jours) que nous "
            "n'avons pas échangé.\n\nVous préparez un événement prochainement\xa0? "
            "Nous proposons de nouveaux menus et services qui pourraient vous "
            "plaire, et nous serons ravis de vous aider."
        ),
    ),
    (
        "reengagement_past_customer",
        "fr",
        (
            "Bonjour\xa0! Nous espérons que vous allez bien.\n\nNous avons été "
            "ravis de participer à votre dernier événement et serions heureux de "
            "vous accompagner pour le prochain. En tant que client fidèle, "
            "renseignez-vous sur nos conditions privilégiées."
        ),
    ),
    (
        "emotion_check_in",
        "fr",
        (
            "Bonjour, nous voulions prendre de vos nouvelles.\n\nIl nous a semblé "
            "que quelque chose vous préoccupait lors de notre dernière "
            "conversation. Pouvons-nous clarifier ou corriger quoi que ce soit\xa0"
            "? Nous sommes là pour vous aider."
        ),
    ),
    ("custom", "fr", "{custom_message}"),
]


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE message_templates (
            template_id varchar(64) NOT NULL,
            locale      varchar(35) NOT NULL,
            version     integer     NOT NULL,
            body        text        NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (template_id, locale, version),
            CONSTRAINT ck_message_templates_version CHECK (version >= 1)
        )
        """
    )
    table = sa.table(
        "message_templates",
        sa.column("template_id", sa.String),
        sa.column("locale", sa.String),
        sa.column("version", sa.Integer),
        sa.column("body", sa.Text),
    )
    op.bulk_insert(
        table,
        [{"template_id": t, "locale": loc, "version": 1, "body": body} for t, loc, body in SEED],
    )
    op.execute("ALTER TABLE user_projection ADD COLUMN locale varchar(35)")
    op.execute("ALTER TABLE user_projection ADD COLUMN locale_at timestamptz")
    op.execute("ALTER TABLE scheduled_followups ADD COLUMN locale varchar(35)")
    op.execute("ALTER TABLE scheduled_followups ADD COLUMN template_version integer")


def downgrade() -> None:
    """Drops message_templates (every edited version) and the locale columns.

    Follow-ups then fire with the texts of the code that runs."""
    op.execute("ALTER TABLE scheduled_followups DROP COLUMN template_version")
    op.execute("ALTER TABLE scheduled_followups DROP COLUMN locale")
    op.execute("ALTER TABLE user_projection DROP COLUMN locale_at")
    op.execute("ALTER TABLE user_projection DROP COLUMN locale")
    op.execute("DROP TABLE message_templates")
