"""A small generative English grammar for the synthetic demo corpus.

Sentences are drawn from a probabilistic phrase-structure grammar over word lists
(several hundred words), not from fixed templates:

    S      -> CLAUSE | CLAUSE CONJ CLAUSE | SUBORD CLAUSE CLAUSE | NAME SAY THAT CLAUSE
              | QUESTION | TIME CLAUSE
    CLAUSE -> NP VP
    NP     -> NAME | PRONOUN | DET ADJ* NOUN [PP] | NUMBER ADJ* NOUN+s
    VP     -> V_trans NP [PP] [ADV] | V_intrans [ADV] [PP] | V_motion PREP_place PLACE_NP
              | WAS ADJ | MODAL V_base NP | ...
    PP     -> PREP NP

Text follows LibriSpeech's normalisation: upper case, no punctuation except the
apostrophe of contractions.
"""
from __future__ import annotations

import random
from typing import Dict, List, Sequence, Tuple

NAMES = (
    "JOHN MARY ANNA PETER THOMAS ALICE HENRY MARGARET ROBERT ELIZABETH WILLIAM SARAH "
    "JAMES EMMA GEORGE HELEN CHARLES LUCY EDWARD MARTHA ARTHUR CLARA FRANCIS JANE "
    "RICHARD EDITH WALTER GRACE SAMUEL ELLEN DAVID ROSE PHILIP AGNES HUGH NORA "
    "OLIVER RUTH VICTOR BEATRICE"
).split()

PERSONS = (
    "MAN WOMAN CHILD BOY GIRL KING QUEEN PRINCE PRINCESS SOLDIER FARMER DOCTOR "
    "SAILOR CAPTAIN TEACHER STUDENT MERCHANT PRIEST JUDGE LAWYER BAKER HUNTER "
    "FISHERMAN SHEPHERD STRANGER NEIGHBOUR FRIEND SERVANT MASTER LADY GENTLEMAN "
    "OFFICER POET PAINTER MINER WEAVER TRAVELLER WIDOW NURSE GUARD THIEF KNIGHT "
    "MESSENGER GARDENER BLACKSMITH CARPENTER COOK DRIVER SINGER"
).split()

ANIMALS = (
    "DOG CAT HORSE COW SHEEP GOAT PIG BIRD EAGLE OWL CROW FOX WOLF BEAR DEER "
    "RABBIT MOUSE LION TIGER SNAKE FROG DUCK GOOSE HEN DONKEY MONKEY WHALE FISH "
    "BUTTERFLY SPIDER"
).split()

THINGS = (
    "BOOK LETTER LAMP CANDLE KEY DOOR WINDOW TABLE CHAIR BASKET BOTTLE CUP PLATE "
    "KNIFE SWORD SHIELD HAT COAT SHOE GLOVE RING COIN PURSE BOX CHEST ROPE BELL "
    "CLOCK MIRROR PICTURE MAP PEN PAPER NEWSPAPER BLANKET PILLOW BUCKET HAMMER NAIL "
    "WHEEL CART BOAT SHIP TRAIN CARRIAGE WAGON LADDER FLAG DRUM VIOLIN PIANO "
    "BREAD CHEESE APPLE ORANGE CAKE SOUP MILK TEA COFFEE WINE HONEY EGG STONE "
    "FLOWER TREE LEAF BRANCH SEED FEATHER SHELL JEWEL CROWN UMBRELLA TICKET PARCEL "
    "NOTEBOOK PENCIL STAMP"
).split()

PLACES = (
    "VILLAGE FOREST RIVER CASTLE GARDEN KITCHEN MARKET CHURCH SCHOOL HARBOUR "
    "MOUNTAIN VALLEY FIELD MEADOW ISLAND BRIDGE STREET ROAD STATION LIBRARY "
    "HOSPITAL PRISON PALACE COTTAGE FARM BARN MILL TOWER CAVE LAKE BEACH DESERT "
    "HILL CITY TOWN PARK CELLAR ATTIC HALL OFFICE SHOP INN THEATRE"
).split()

ABSTRACT = (
    "TRUTH SILENCE HOPE FEAR COURAGE ANSWER QUESTION STORY SECRET PROMISE DREAM "
    "SONG MESSAGE PLAN REASON CHANCE NEWS WARNING LESSON GIFT PROBLEM IDEA "
    "MEMORY MISTAKE VICTORY DANGER PUZZLE RIDDLE JOURNEY ADVENTURE"
).split()

ADJECTIVES = (
    "OLD YOUNG TALL SHORT BIG SMALL LITTLE GREAT HEAVY LIGHT DARK BRIGHT COLD WARM "
    "HOT QUIET LOUD GENTLE ANGRY HAPPY SAD TIRED HUNGRY BRAVE CLEVER FOOLISH "
    "STRANGE FAMOUS RICH POOR PROUD HUMBLE KIND CRUEL STRONG WEAK FAST SLOW "
    "BEAUTIFUL UGLY CLEAN DIRTY EMPTY FULL SILENT NARROW WIDE DEEP SHALLOW SOFT "
    "HARD SHARP SMOOTH ROUGH WILD CALM FRESH ANCIENT MODERN PRECIOUS CURIOUS "
    "NERVOUS PATIENT HONEST SECRET GOLDEN WOODEN BROKEN HIDDEN LONELY FRIENDLY "
    "RED BLUE GREEN YELLOW WHITE BLACK BROWN GREY PURPLE SILVER"
).split()



def _verb_pairs(forms: str) -> List[Tuple[str, str]]:
    """'SEE/SAW FIND/FOUND' -> [('SEE', 'SAW'), ('FIND', 'FOUND')]."""
    return [tuple(pair.split("/")) for pair in forms.split()]  # type: ignore[misc]


# (base, past) forms of verbs that take an object.
TRANSITIVE = _verb_pairs(
    "SEE/SAW FIND/FOUND CARRY/CARRIED OPEN/OPENED CLOSE/CLOSED BUY/BOUGHT "
    "SELL/SOLD BRING/BROUGHT TAKE/TOOK GIVE/GAVE HOLD/HELD BREAK/BROKE "
    "FOLLOW/FOLLOWED WATCH/WATCHED HELP/HELPED CALL/CALLED MEET/MET VISIT/VISITED "
    "REMEMBER/REMEMBERED FORGET/FORGOT BUILD/BUILT PAINT/PAINTED WRITE/WROTE "
    "READ/READ DROP/DROPPED LIFT/LIFTED PUSH/PUSHED PULL/PULLED HIDE/HID "
    "CATCH/CAUGHT THROW/THREW WASH/WASHED COOK/COOKED EAT/ATE DRINK/DRANK "
    "LOVE/LOVED HATE/HATED ADMIRE/ADMIRED TEACH/TAUGHT ASK/ASKED ANSWER/ANSWERED "
    "STEAL/STOLE LOSE/LOST KEEP/KEPT SEND/SENT RECEIVE/RECEIVED CHOOSE/CHOSE "
    "DRAW/DREW CUT/CUT FILL/FILLED MEND/MENDED POLISH/POLISHED GUARD/GUARDED "
    "CHASE/CHASED GREET/GREETED THANK/THANKED WARN/WARNED FEED/FED PROTECT/PROTECTED "
    "DISCOVER/DISCOVERED EXAMINE/EXAMINED COUNT/COUNTED OFFER/OFFERED "
    "ACCEPT/ACCEPTED REFUSE/REFUSED PREPARE/PREPARED DESCRIBE/DESCRIBED "
    "IMAGINE/IMAGINED"
)

INTRANSITIVE = _verb_pairs(
    "SLEEP/SLEPT LAUGH/LAUGHED CRY/CRIED SMILE/SMILED SING/SANG DANCE/DANCED "
    "WAIT/WAITED LISTEN/LISTENED PRAY/PRAYED REST/RESTED SHOUT/SHOUTED "
    "WHISPER/WHISPERED TREMBLE/TREMBLED SIGH/SIGHED NOD/NODDED WORK/WORKED "
    "PLAY/PLAYED FALL/FELL DISAPPEAR/DISAPPEARED AGREE/AGREED HESITATE/HESITATED "
    "SHIVER/SHIVERED COUGH/COUGHED WAKE/WOKE SWIM/SWAM STUMBLE/STUMBLED "
    "ARRIVE/ARRIVED RETURN/RETURNED"
)

MOTION = _verb_pairs(
    "WALK/WALKED RUN/RAN HURRY/HURRIED WANDER/WANDERED RIDE/RODE SAIL/SAILED "
    "CLIMB/CLIMBED CRAWL/CRAWLED MARCH/MARCHED RUSH/RUSHED DRIVE/DROVE FLY/FLEW "
    "STROLL/STROLLED CREEP/CREPT TRAVEL/TRAVELLED"
)

SPEECH = "SAID WHISPERED SHOUTED EXPLAINED ANNOUNCED ADMITTED REPLIED INSISTED BELIEVED HOPED FEARED KNEW".split()

ADVERBS = (
    "SLOWLY QUICKLY QUIETLY LOUDLY GENTLY CAREFULLY SUDDENLY HAPPILY SADLY "
    "PATIENTLY PROUDLY BRAVELY NERVOUSLY CALMLY EAGERLY SOFTLY FIRMLY POLITELY "
    "SILENTLY SECRETLY OPENLY WILLINGLY BARELY ALMOST TWICE AGAIN TOGETHER ALONE "
    "TODAY YESTERDAY TOMORROW AFTERWARDS SOON LATER EARLY"
).split()

PREPOSITIONS = (
    "IN ON UNDER NEAR BEHIND BESIDE ABOVE BELOW BETWEEN AROUND ACROSS THROUGH "
    "INTO TOWARDS PAST ALONG WITHIN BEYOND OUTSIDE INSIDE"
).split()

MOTION_PREPS = "INTO TOWARDS ACROSS THROUGH AROUND PAST ALONG UP DOWN OVER".split()

DETERMINERS = "THE A HIS HER THEIR OUR MY YOUR THIS THAT EVERY SOME ANOTHER".split()

NUMBERS = (
    "TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE TWENTY THIRTY "
    "FORTY FIFTY HUNDRED SEVERAL MANY FEW"
).split()

SUBJECT_PRONOUNS = "HE SHE THEY WE I YOU".split()
OBJECT_PRONOUNS = "HIM HER THEM US ME IT".split()

CONJUNCTIONS = "AND BUT SO YET".split()
SUBORDINATORS = "WHEN WHILE BECAUSE ALTHOUGH BEFORE AFTER SINCE UNTIL".split()
MODALS = "WILL WOULD COULD SHOULD MIGHT MUST CANNOT DIDN'T WON'T COULDN'T".split()
QUESTION_WORDS = "WHY WHERE WHEN HOW".split()
DAYS = "MONDAY TUESDAY WEDNESDAY THURSDAY FRIDAY SATURDAY SUNDAY".split()
PARTS_OF_DAY = "MORNING AFTERNOON EVENING NIGHT".split()
SEASONS = "SPRING SUMMER AUTUMN WINTER".split()
PERIODS = "NIGHT YEAR WEEK".split()
DURATIONS = "DAYS HOURS YEARS WEEKS".split()
COPULAS = "WAS WERE SEEMED BECAME LOOKED".split()
DEGREES = "VERY RATHER QUITE TOO".split()
PLACE_DETERMINERS = "THE A HIS HER THEIR OUR".split()
# Words the rules themselves insert.
FIXED = "AN OF THAT DID ON IN LAST EVERY AFTER ONCE UPON A TIME".split()

_IRREGULAR_PLURALS: Dict[str, str] = {
    "MAN": "MEN", "WOMAN": "WOMEN", "CHILD": "CHILDREN", "FISHERMAN": "FISHERMEN",
    "GENTLEMAN": "GENTLEMEN", "MOUSE": "MICE", "SHEEP": "SHEEP", "DEER": "DEER",
    "FISH": "FISH", "GOOSE": "GEESE", "WOLF": "WOLVES", "KNIFE": "KNIVES",
    "LEAF": "LEAVES", "THIEF": "THIEVES", "SHELF": "SHELVES", "LADY": "LADIES",
}


def plural(noun: str) -> str:
    """English plural of an upper-case noun (regular rules plus a table of exceptions)."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("S", "X", "CH", "SH")):
        return noun + "ES"
    if noun.endswith("Y") and noun[-2:-1] not in ("A", "E", "I", "O", "U"):
        return noun[:-1] + "IES"
    return noun + "S"


def vocabulary() -> List[str]:
    """Every word the grammar can produce, sorted (plural forms included)."""
    words = set(NAMES + ADJECTIVES + SPEECH + ADVERBS + PREPOSITIONS + MOTION_PREPS)
    words |= set(DETERMINERS + NUMBERS + SUBJECT_PRONOUNS + OBJECT_PRONOUNS)
    words |= set(CONJUNCTIONS + SUBORDINATORS + MODALS + QUESTION_WORDS)
    words |= set(DAYS + PARTS_OF_DAY + SEASONS + PERIODS + DURATIONS + COPULAS + DEGREES + FIXED)
    for noun in PERSONS + ANIMALS + THINGS + PLACES + ABSTRACT:
        words |= {noun, plural(noun)}
    for base, past in TRANSITIVE + INTRANSITIVE + MOTION:
        words |= {base, past}
    return sorted(words)


class SentenceGenerator:
    """Draws random sentences from the grammar; deterministic for a given ``seed``."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    # ----------------------------------------------------------------- helpers
    def _pick(self, seq: Sequence[str]) -> str:
        return self.rng.choice(seq)

    def _chance(self, p: float) -> bool:
        return self.rng.random() < p

    def _common_noun(self) -> str:
        pool = self.rng.choices(
            (PERSONS, ANIMALS, THINGS, PLACES, ABSTRACT), weights=(4, 2, 4, 2, 1)
        )[0]
        return self._pick(pool)

    # ----------------------------------------------------------------- phrases
    def noun_phrase(self, depth: int = 0, animate: bool = False) -> List[str]:
        """NP -> NAME | DET ADJ* NOUN [PP] | NUMBER ADJ* NOUN-s."""
        r = self.rng.random()
        if r < 0.18:
            return [self._pick(NAMES)]
        nouns = PERSONS + ANIMALS if animate else None
        noun = self._pick(nouns) if nouns else self._common_noun()
        adjs = [self._pick(ADJECTIVES) for _ in range(self.rng.choice((0, 0, 1, 1, 1, 2)))]
        if r < 0.30:
            words = [self._pick(NUMBERS)] + adjs + [plural(noun)]
        else:
            det = self._pick(DETERMINERS)
            if det == "A" and (adjs or [noun])[0][0] in "AEIOU":
                det = "AN"
            words = [det] + adjs + [noun]
        if depth == 0 and self._chance(0.15):
            words += self.prep_phrase(depth + 1)
        elif depth == 0 and self._chance(0.08):
            words += ["OF", self._pick(NAMES)]
        return words

    def subject(self) -> List[str]:
        if self._chance(0.2):
            return [self._pick(SUBJECT_PRONOUNS)]
        return self.noun_phrase(animate=self._chance(0.8))

    def obj(self) -> List[str]:
        if self._chance(0.12):
            return [self._pick(OBJECT_PRONOUNS)]
        return self.noun_phrase()

    def prep_phrase(self, depth: int = 1) -> List[str]:
        return [self._pick(PREPOSITIONS)] + self.noun_phrase(depth)

    def time_phrase(self) -> List[str]:
        r = self.rng.randrange(6)
        if r == 0:
            return ["ON", self._pick(DAYS)]
        if r == 1:
            return ["IN", "THE", self._pick(PARTS_OF_DAY)]
        if r == 2:
            return ["LAST", self._pick(SEASONS + PERIODS)]
        if r == 3:
            return ["EVERY", self._pick(PARTS_OF_DAY + DAYS)]
        if r == 4:
            return ["AFTER", self._pick(NUMBERS[:12]), self._pick(DURATIONS)]
        return ["ONCE", "UPON", "A", "TIME"]

    def verb_phrase(self) -> List[str]:
        r = self.rng.random()
        if r < 0.40:
            words = [self._pick(TRANSITIVE)[1]] + self.obj()
            if self._chance(0.3):
                words += self.prep_phrase()
        elif r < 0.58:
            words = [self._pick(INTRANSITIVE)[1]]
            if self._chance(0.3):
                words += self.prep_phrase()
        elif r < 0.72:
            words = [self._pick(MOTION)[1], self._pick(MOTION_PREPS)]
            words += [self._pick(PLACE_DETERMINERS), self._pick(PLACES)]
        elif r < 0.84:
            words = [self._pick(MODALS), self._pick(TRANSITIVE)[0]] + self.obj()
        else:
            words = [self._pick(COPULAS)]
            if self._chance(0.3):
                words.append(self._pick(DEGREES))
            words.append(self._pick(ADJECTIVES))
        if self._chance(0.25):
            words.append(self._pick(ADVERBS))
        return words

    def clause(self) -> List[str]:
        return self.subject() + self.verb_phrase()

    def question(self) -> List[str]:
        """QUESTION -> WH DID SUBJECT V_base [OBJECT]."""
        words = [self._pick(QUESTION_WORDS), "DID"] + self.subject()
        if self._chance(0.6):
            return words + [self._pick(TRANSITIVE)[0]] + self.obj()
        return words + [self._pick(INTRANSITIVE)[0]]

    def sentence(self) -> List[str]:
        """S -> one of six shapes, weighted towards simple clauses."""
        r = self.rng.random()
        if r < 0.35:
            words = self.clause()
        elif r < 0.52:
            words = self.clause() + [self._pick(CONJUNCTIONS)] + self.clause()
        elif r < 0.64:
            words = [self._pick(SUBORDINATORS)] + self.clause() + self.clause()
        elif r < 0.74:
            words = [self._pick(NAMES), self._pick(SPEECH), "THAT"] + self.clause()
        elif r < 0.84:
            words = self.question()
        else:
            words = self.time_phrase() + self.clause()
        return words

    def sample(self, min_words: int = 4, max_words: int = 16) -> str:
        """One sentence with ``min_words <= len <= max_words``, as a single string."""
        while True:
            words = self.sentence()
            if min_words <= len(words) <= max_words:
                return " ".join(words)

    def unique_sentences(self, n: int, **kwargs) -> List[str]:
        """``n`` distinct sentences (raises if the grammar cannot produce that many)."""
        seen: Dict[str, None] = {}
        attempts = 0
        while len(seen) < n:
            attempts += 1
            if attempts > 50 * n + 1000:
                raise RuntimeError(f"grammar produced only {len(seen)} distinct sentences, asked for {n}")
            seen.setdefault(self.sample(**kwargs), None)
        return list(seen)


def split_sentences(
    sentences: Sequence[str], sizes: Dict[str, int], seed: int = 0
) -> Dict[str, List[str]]:
    """Partition distinct ``sentences`` into disjoint named splits of the given sizes."""
    if len(set(sentences)) != len(sentences):
        raise ValueError("split_sentences: the input sentences are not distinct")
    total = sum(sizes.values())
    if total > len(sentences):
        raise ValueError(f"split_sentences: need {total} sentences, got {len(sentences)}")
    order = list(sentences)
    random.Random(seed).shuffle(order)
    out: Dict[str, List[str]] = {}
    start = 0
    for name, size in sizes.items():
        out[name] = order[start : start + size]
        start += size
    return out
