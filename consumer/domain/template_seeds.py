"""The texts every database starts with (migration 0004 seeds these as version 1):
the original design's English, and French.

Operators edit them through the admin API and CLI; these stay as the last
resort of the fallback chain and as the record of where the texts began.
"""

from __future__ import annotations

from typing import Final

from consumer.domain.template_text import TemplateId

# French typography: a no-break space before ! ? and :.
_NB = "\u00a0"

ENGLISH: Final[dict[TemplateId, str]] = {
    TemplateId.POST_EVENT_HIGH: (
        "Hi! 🎉 We hope your event on {event_date} was wonderful!\n\n"
        "We'd love to hear how it went. Did everything meet your expectations? "
        "Any highlights or feedback you'd like to share?\n\n"
        "Looking forward to hearing from you!"
    ),
    TemplateId.POST_EVENT_NEUTRAL: (
        "Hello! We're checking in about your event on {event_date}.\n\n"
        "How did it go? Your feedback helps us serve you better.\n\n"
        "Reach out any time if you have questions or are planning another event."
    ),
    TemplateId.POST_EVENT_LOW: (
        "Hi there. We're following up on your event from {event_date}.\n\n"
        "You mentioned some concerns when we spoke, and we want to be sure everything "
        "went smoothly. If anything fell short, please tell us: we want to make it right."
    ),
    TemplateId.REENGAGEMENT_GENERAL: (
        "Hi! It's been a while ({days_inactive} days) since we last talked.\n\n"
        "Are you planning an event soon? We have new menus and services you might like, "
        "and we're happy to help."
    ),
    TemplateId.REENGAGEMENT_PAST_CUSTOMER: (
        "Hello! We hope you're doing well.\n\n"
        "We loved being part of your last event and would be glad to help with the next "
        "one. As a returning customer, ask us about special arrangements."
    ),
    TemplateId.EMOTION_CHECK_IN: (
        "Hi, we wanted to check in with you.\n\n"
        "It sounded like something was bothering you in our last conversation. "
        "Is there anything we can clarify or fix? We're here to help."
    ),
    TemplateId.CUSTOM: "{custom_message}",
}

FRENCH: Final[dict[TemplateId, str]] = {
    TemplateId.POST_EVENT_HIGH: (
        f"Bonjour{_NB}! 🎉 Nous espérons que votre événement du {{event_date}} "
        f"a été merveilleux{_NB}!\n\n"
        "Nous aimerions beaucoup savoir comment il s'est passé. Tout a-t-il été "
        f"à la hauteur de vos attentes{_NB}? Des moments forts ou des remarques "
        f"à nous faire partager{_NB}?\n\n"
        f"Au plaisir de vous lire{_NB}!"
    ),
    TemplateId.POST_EVENT_NEUTRAL: (
        f"Bonjour{_NB}! Nous revenons vers vous au sujet de votre événement "
        "du {event_date}.\n\n"
        f"Comment s'est-il passé{_NB}? Votre avis nous aide à mieux vous servir.\n\n"
        "N'hésitez pas à nous écrire si vous avez des questions ou si vous préparez "
        "un autre événement."
    ),
    TemplateId.POST_EVENT_LOW: (
        "Bonjour. Nous revenons vers vous au sujet de votre événement du {event_date}.\n\n"
        "Vous nous aviez fait part de quelques inquiétudes lors de nos échanges, et nous "
        "voulons nous assurer que tout s'est bien passé. Si quelque chose n'a pas été "
        f"à la hauteur, dites-le-nous{_NB}: nous tenons à arranger les choses."
    ),
    TemplateId.REENGAGEMENT_GENERAL: (
        f"Bonjour{_NB}! Cela fait un moment ({{days_inactive}} jours) que nous n'avons "
        "pas échangé.\n\n"
        f"Vous préparez un événement prochainement{_NB}? Nous proposons de nouveaux "
        "menus et services qui pourraient vous plaire, et nous serons ravis de vous aider."
    ),
    TemplateId.REENGAGEMENT_PAST_CUSTOMER: (
        f"Bonjour{_NB}! Nous espérons que vous allez bien.\n\n"
        "Nous avons été ravis de participer à votre dernier événement et serions heureux "
        "de vous accompagner pour le prochain. En tant que client fidèle, renseignez-vous "
        "sur nos conditions privilégiées."
    ),
    TemplateId.EMOTION_CHECK_IN: (
        "Bonjour, nous voulions prendre de vos nouvelles.\n\n"
        "Il nous a semblé que quelque chose vous préoccupait lors de notre dernière "
        f"conversation. Pouvons-nous clarifier ou corriger quoi que ce soit{_NB}? "
        "Nous sommes là pour vous aider."
    ),
    TemplateId.CUSTOM: "{custom_message}",
}

# (template id, locale) -> body: version 1 of every text.
SEEDS: Final[dict[tuple[str, str], str]] = {
    **{(t.value, "en"): body for t, body in ENGLISH.items()},
    **{(t.value, "fr"): body for t, body in FRENCH.items()},
}
