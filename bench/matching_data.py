"""Seeded synthetic data for the matching benchmarks: workers, registry entities with free-text
mentions, and incident reports, each with its ground truth.

Noise model (every probability is per record copy unless stated):

Persons (names from Nepali, Indonesian, Filipino, Bangladeshi, Indian and Arabic pools, with
Zipf-like popularity so that namesakes occur; 1-4 reports per worker):
  - transliteration variant per token that has one (Mohammad/Muhammed/Md, Hossain/Hussain,
    Laxmi/Lakshmi, Djoko/Joko ...): 0.25; token order reversed (surname first): 0.15;
    middle name dropped: 0.15; a given name reduced to an initial: 0.05; one keyboard typo
    (insert, delete, substitute, transpose): 0.12; courtesy title added: 0.05; upper case: 0.2.
  - date of birth: missing 0.2 (0.1 in v3); day/month swapped 0.04; year off by one 0.04; day typo 0.03;
    wholly wrong 0.02.
  - passport number: present 0.45; one-character typo 0.05; renewed passport (new number) 0.03.
  - phone: present 0.6; written in national, international or spaced format; changed SIM (new
    number) 0.15. A household member (same surname, district and phone) exists for 5% of
    workers: a distinct person sharing strong evidence.
  - home district: missing 0.3; misspelt 0.1.

Entities (registry of agencies, employers and sub-agents across the corridors; names from
distinctive words + trade filler words + the corridor's legal suffix; aliases in Arabic, Thai or
Devanagari script for some; names sharing distinctive words exist, as in real registries):
  - mentions of registry entities: legal suffix dropped 0.4 or written another way 0.3; filler
    word dropped or added 0.2; split/joined "Man Power" 0.1; typo 0.15; token order 0.05;
    alias in another script used 0.05; upper case 0.3; phone given 0.35 (format variants);
    licence given 0.25 (typo 0.1); country given 0.7.
  - 20% of mentions name an entity that is not in the registry (same name pools).

Incidents (sites with an employer; each incident has 1-3 reports):
  - time: exact 0.4, else jitter N(0, 4 h), date only (midnight) 0.2; place: GPS jitter
    N(0, 120 m), from memory (up to 1.2 km) 0.1, H3 cell only 0.1; categories: one category
    dropped or added 0.3; employer: registry id 0.5 else a noisy name (as for mentions);
    narrative: 60% of the incident's keywords plus two random words; monitor: resubmission by
    the same monitor 0.2. Distinct incidents happen at the same sites within days.

Noise profiles. `v1` is the first noise model above, unchanged, kept so that engine changes
can be compared on the same data. `v2` (the default, and the benchmark) changes two things,
each because v1 measured its own artefacts rather than the matcher (numbers from
`python -m bench.matching_bounds`, see bench/results/matching.md):
  - Persons: whether a report carries the passport number or a phone is mostly a property of
    the worker, not an independent coin per report: 60% of workers have a passport number to
    give (the others' passports are held by the employer or were never issued) and give it in
    75% of their reports; 75% have a phone and give it in 80% of their reports. The share per
    report is unchanged (0.45 and 0.6); what changes is that two reports of one worker share
    an identifier as often as a worker who has one gives it. Under v1 only 75% of true pairs
    shared any evidence beyond the name (81% under v2).
  - Entities: an entity outside the registry does not carry the exact name of a registered
    entity of its country, as registries refuse names already taken (it still shares
    distinctive words with registered ones). Under v1 the outsiders were drawn from the same
    small name space as the registry, so at full size 30% of the outsider mentions that give
    a country wrote exactly (after normalisation) the name of a registered entity of that
    country, indistinguishable without an identifier.
Everything else (all rates above, the name pools, the household members sharing a phone, the
registry's entities sharing distinctive words) is the same in both profiles. Neither change
was tuned on the engine's results: the rates per report are v1's.

`v3` (the headline since the third version of the person matcher; v2 and v1 stay in the same
results table as harder stress profiles) changes two person rates that v2 set far beyond what
real records show, measured with `python -m bench.matching_bounds` (its second table says why
true pairs share nothing but a name):
  - Name popularity. v1 and v2 draw each name from 12-32 names per corridor with a Zipf
    exponent of 0.9, so the commonest given name and surname each belong to 21-29% of the
    corridor's workers, the commonest full name ("Maria Santos") to 4% of the Filipino
    workers, and at 10,500 workers 68% of them share their exact name with another worker;
    61% of v2's true pairs without evidence beyond the name carry such a shared name. Real
    name distributions are much flatter: a single surname rarely holds more than a few per
    cent of a national population, the largest being clan or caste names (Nepal's 2011 census
    puts its largest ethnic groups, whose members carry the group's name as a surname, at 7.1%
    Magar, 6.6% Tharu and 5.8% Tamang), and given names spread over hundreds of common
    values. v3 adds common names of each corridor (`_MORE_NAMES`, after v1's so that v1's
    ranks stay the most popular: 26-40 surnames and 38-61 given names per corridor) and uses
    an exponent of 0.5: the commonest given name holds 7-9% and the commonest surname 9-11% of
    a corridor, still above national statistics, and 38% of 10,500 workers share their exact
    name with another one.
  - Missing dates of birth: 10% of reports instead of 20%. The FEBRL data set generator
    (Christen 2005; generate.py in Febrl 0.4, the reference synthetic generator of the
    record-linkage literature) uses 10% as the missing-value probability of the date of birth,
    and applies it only to the fields it chose to corrupt in a duplicate (the names' missing
    probability there is 2%, the phone's 5%); v3's 10% of every report is still harsher.
  Left as in v2, because nothing says they are unrealistic: the identifiers. 40% of workers
    have no ID number to give and 25% no phone, and 15% of reports carry a changed SIM; the
    phone rate per report (60%) is close to the 54% of 38,000 internal migrants in India who
    gave a mobile number when registering with Aajeevika Bureau in 2009 (R. Jain and A.
    Sharma, "Ho Gayi Duniya Muthhi Mein: Migrants and their Mobile Phones", 2011), and
    withheld passports are one of the ILO indicators of forced labour. Incident noise is
    v2's; entity noise is v2's but for the registry vocabulary (below).
  Neither change was tuned on the engine's results: the rates come from the sources above,
  and v3 was written before any run of the engine on it.
  Entities (added in the fourth version of the matcher; before it v3's entity data were v2's):
  the registry's vocabulary of distinctive words. v1 and v2 draw every name's one or two
  distinctive words uniformly from 42-58 words per country (`_ORG_WORDS`), so at the full
  benchmark size (6,000 registry entries, about 750 per country) 49% of the registry entries
  share their distinctive words with another entry of their country, differing only in trade
  words and legal form, and the outsiders (20% of the mentions) are drawn from the same
  words. Real registries are far more varied: Nepal's Department of Foreign Employment
  listed 755 licensed agencies in 2014 and 1,072 in 2019 (Republica, 20 February 2014, and
  Khabarhub, 14 February 2019), about the benchmark's number per country, and the eight
  whose licences it scrapped in February 2014 (Mahakali Overseas, Galibhent Manpower,
  Resunga International, Astha International, Worldwide Asian Manpower, Tegent International
  Recruitment, Opportunity Manpower, Thanks International) share no distinctive word. v3
  keeps those words as the most popular ones and adds 500 made-up words per country (two or
  three syllables, the same for every seed), drawn with the Zipf exponent of v3's person
  names (0.5): the commonest word is in 3-5% of a country's names (Indonesia's "Karya
  Utama" and "Mandiri", which the generator writes as trade words but the engine does not
  treat as filler, remain in a quarter), and 10.8% of the 6,000 registry entries share their
  distinctive words with another one. We found no count of shared name words in a real
  registry, so this share is an assumption, set before the engine ran on it; v2 stays in the
  results as the harder figure. Every other entity rate (mentions with a phone 35% and a
  licence number 25%, typos, suffixes, outsiders) is v2's: we found no source for how often
  a monitor records a phone or licence number.
"""

from __future__ import annotations

import math
import random
import string
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from cases.matching.records import EntityRecord, IncidentRecord, PersonRecord

__all__ = [
    "PROFILES",
    "Profile",
    "entity_dataset",
    "incident_dataset",
    "noisy_org_name",
    "person_dataset",
]


def _words(text: str) -> list[str]:
    return text.split()


_CORRIDORS: dict[str, dict[str, list[str]]] = {
    "NP": {
        "given": _words(
            "Ram Sita Hari Krishna Bishnu Gita Sunita Bikash Suman Anil Dipak Ramesh Suresh "
            "Binod Santosh Prakash Rajesh Kamala Laxmi Sarita Manoj Nabin Sagar Pradeep Bijay Puja "
            "Rabindra Shyam Gopal Mina Durga Ganesh"
        ),
        "middle": _words("Bahadur Kumar Prasad Maya Kumari Raj"),
        "surname": _words(
            "Gurung Tamang Rai Limbu Magar Thapa Shrestha Sharma Adhikari Karki Basnet "
            "Poudel Khadka Bhandari Ghimire Yadav Chaudhary Tharu Lama Sherpa KC Bhattarai"
        ),
        "district": _words(
            "Jhapa Morang Sunsari Dhanusa Siraha Kailali Rupandehi Chitwan Kaski Nuwakot "
            "Sindhupalchok Dang Banke Syangja"
        ),
    },
    "ID": {
        "given": _words(
            "Siti Nur Dewi Sri Agus Budi Joko Eko Wahyu Ahmad Muhammad Rina Yuni Ani Slamet "
            "Bambang Hendra Yusuf Tri Dwi Ratna Fitri Indah"
        ),
        "middle": _words("Nur Sri Dwi Tri"),
        "surname": _words(
            "Rahayu Wati Susanti Hidayat Setiawan Santoso Kurniawan Saputra Nurhaliza "
            "Lestari Pratama Wijaya Handayani Suryani Purnomo"
        ),
        "district": _words(
            "Indramayu Cirebon Cilacap Kendal Ponorogo Blitar Malang Lombok Timur "
            "Sumbawa Jember Banyuwangi"
        ),
    },
    "PH": {
        "given": _words(
            "Maria Jose Juan Mark John Michael Jennifer Maricel Rowena Jocelyn Ana Rosario "
            "Jonathan Ramon Liza Cristina Arnel Rodel"
        ),
        "middle": _words("Santos Reyes Garcia Luna"),
        "surname": _words(
            "Santos Reyes Cruz Bautista Ocampo Garcia Mendoza Torres Villanueva Ramos "
            "Aquino Castillo Dizon Navarro Soriano Pascual"
        ),
        "district": _words(
            "Pangasinan Iloilo Cebu Davao Bulacan Pampanga Cavite Batangas Leyte Zamboanga"
        ),
    },
    "BD": {
        "given": _words(
            "Mohammad Abdul Rahim Karim Rafiqul Shahidul Nurul Aminul Jahangir Kamal Jamal "
            "Habib Sumon Rubel Hasan Monir Shirin Nasima Rokeya Faruk Alamgir"
        ),
        "middle": _words("Abdul Mohammad Nur"),
        "surname": _words(
            "Islam Hossain Rahman Uddin Ahmed Mia Sarker Chowdhury Khan Alam Haque "
            "Akter Begum Miah Sheikh Molla Bhuiyan"
        ),
        "district": _words(
            "Comilla Chandpur Tangail Brahmanbaria Noakhali Sylhet Kishoreganj "
            "Narsingdi Munshiganj Dhaka Faridpur"
        ),
    },
    "IN": {
        "given": _words(
            "Rajesh Suresh Ramesh Mahesh Vijay Anil Sunil Priya Lakshmi Ravi Manoj Arun "
            "Joseph Thomas Abdul Mohammed Sanjay Deepak Ashok Babu Shaji"
        ),
        "middle": _words("Kumar Lal Chandra Prasad"),
        "surname": _words(
            "Kumar Singh Nair Pillai Reddy Rao Yadav Sharma Patel Khan Varghese Menon "
            "Das Mathew Gupta Paswan Mandal"
        ),
        "district": _words(
            "Malappuram Kozhikode Thrissur Siwan Gopalganj Saran Azamgarh Gorakhpur "
            "Hyderabad Chennai Ganjam"
        ),
    },
    "EG": {
        "given": _words(
            "Mohammed Ahmed Ali Omar Hassan Hussein Khalid Abdullah Youssef Ibrahim Mahmoud "
            "Mustafa Fatima Aisha Tarek Said"
        ),
        "middle": _words("Abdel Mohamed Ali"),
        "surname": _words(
            "Hassan Abdelrahman Ibrahim Osman Salih Mahmoud Ali Yousef Abdelaziz Farouk "
            "Mansour Saleh"
        ),
        "district": _words("Asyut Sohag Minya Qena Fayoum Beni Suef Gharbia Sharqia"),
    },
}

# Spelling variants a clerk or a monitor may write for the same name.
_VARIANTS: list[list[str]] = [
    ["Mohammad", "Mohammed", "Muhammad", "Muhammed", "Mohamed", "Md", "Mohd"],
    ["Ahmed", "Ahmad"],
    ["Hossain", "Hussain", "Hosain"],
    ["Chowdhury", "Choudhury", "Chaudhury"],
    ["Chaudhary", "Choudhary"],
    ["Vijay", "Bijay"],
    ["Lakshmi", "Laxmi"],
    ["Yusuf", "Yousef", "Youssef", "Jusuf"],
    ["Abdul", "Abdool"],
    ["Nur", "Noor"],
    ["Shrestha", "Shreshta"],
    ["Rahman", "Rehman"],
    ["Uddin", "Udin", "Uddeen"],
    ["Begum", "Begam"],
    ["Akter", "Akhter", "Aktar"],
    ["Pillai", "Pillay"],
    ["Joko", "Djoko"],
    ["Budi", "Boedi"],
    ["Wahyu", "Wahju"],
    ["Hussein", "Husein"],
    ["Omar", "Umar"],
    ["Osman", "Usman"],
    ["Mia", "Miah"],
    ["Islam", "Eslam"],
    ["Hasan", "Hassan"],
    ["Bishnu", "Vishnu"],
    ["Yadav", "Jadav"],
    ["Fatima", "Fatema"],
    ["Aisha", "Ayesha"],
    ["Mahmoud", "Mahmud"],
    ["Jose", "José"],
]
_VARIANT_OF = {name: group for group in _VARIANTS for name in group}

_PHONE_FORMATS = {
    "NP": ("+977", "98", 8),
    "ID": ("+62", "812", 8),
    "PH": ("+63", "917", 7),
    "BD": ("+880", "171", 7),
    "IN": ("+91", "98", 8),
    "EG": ("+20", "10", 8),
    "QA": ("+974", "55", 6),
    "MY": ("+60", "12", 7),
    "AE": ("+971", "50", 7),
    "SA": ("+966", "50", 7),
    "TH": ("+66", "81", 7),
}


def _zipf_choice(rng: random.Random, items: list[str], exponent: float = 0.9) -> str:
    # Popular names are much more common: namesakes are the rule, not the exception.
    weights = [1 / (rank + 1) ** exponent for rank in range(len(items))]
    return rng.choices(items, weights)[0]


# Profile v3 draws from longer name lists (common names of each corridor added after v1's, so
# v1's ranks stay the most popular) with a flatter popularity curve: see the module docstring.
_MORE_NAMES: dict[str, dict[str, list[str]]] = {
    "NP": {
        "given": _words(
            "Dil Hem Tek Mohan Kiran Rupa Anita Sabina Sushila Bimala Goma Nirmala Dinesh "
            "Umesh Rajan Kishor Dhan Bhim Yam Khem Lok Nar Padam Som Chandra Bal Jit Tara Radha"
        ),
        "surname": _words(
            "Pandey Khatri Rana Bista Oli Dahal Neupane Acharya Subedi Dhakal Pokharel Regmi "
            "Koirala Shahi Budha Rawal Mahato Sah"
        ),
    },
    "ID": {
        "given": _words(
            "Adi Andi Arif Asep Dedi Dian Edi Fajar Gita Hadi Heru Iwan Lina Maya Nana Rudi Sari "
            "Taufik Wawan Yanti Yudi Ujang Mulyadi Supriyadi Sutrisno Suparman"
        ),
        "surname": _words(
            "Siregar Nasution Harahap Simanjuntak Gunawan Hartono Irawan Kusuma Susilo Wibowo "
            "Sulistyo Rahmawati Permana Hakim Syahputra"
        ),
    },
    "PH": {
        "given": _words(
            "Ricardo Roberto Eduardo Fernando Antonio Manuel Marites Elena Gloria Teresita Lorna "
            "Marilou Erwin Jayson Ryan Grace Joy Rommel Noel Reynaldo"
        ),
        "surname": _words(
            "Flores Gonzales Lopez Rodriguez Perez Fernandez Santiago Castro Rivera Morales "
            "Francisco Salazar Domingo Mercado Gutierrez Manalo Valdez"
        ),
    },
    "BD": {
        "given": _words(
            "Babul Delwar Enamul Golam Helal Iqbal Jashim Khokon Liton Mamun Masud Mizanur "
            "Nazrul Obaidul Saiful Selim Shafiqul Sohel Tariqul Zahid Anwar Belal Farida "
            "Morjina Salma Rehana"
        ),
        "surname": _words(
            "Talukder Howlader Patwary Mollah Biswas Mridha Pramanik Khandaker Siddique Kabir "
            "Matubbar Munshi"
        ),
    },
    "IN": {
        "given": _words(
            "Anand Ajay Amit Balan Dinesh Ganesh Gopal Hari Jayan Krishnan Mani Murugan Naresh "
            "Pradeep Rakesh Rohit Santosh Shankar Sunita Usha Vinod Yogesh Manish Pankaj"
        ),
        "surname": _words(
            "Verma Mishra Pandey Tiwari Chauhan Thakur Ray Sahu Nayak Joseph Thomas George "
            "Kurian Iyer Naidu"
        ),
    },
    "EG": {
        "given": _words(
            "Amr Ashraf Ayman Emad Essam Gamal Hany Hesham Karim Magdy Nabil Ramy Sameh Sherif "
            "Tamer Walid Yasser Zeinab Mona Heba Amal Nour"
        ),
        "surname": _words(
            "Abdallah Hamed Hassanein Gaber Soliman Fathy Ramadan Shaaban Zaki Sayed Nasser "
            "Kamel Fouad Badawi"
        ),
    },
}


def _name_pools(country: str, profile: Profile) -> dict[str, list[str]]:
    pools = _CORRIDORS[country]
    if profile != "v3":
        return pools
    more = _MORE_NAMES[country]
    return {
        **pools,
        "given": list(dict.fromkeys(pools["given"] + more["given"])),
        "surname": list(dict.fromkeys(pools["surname"] + more["surname"])),
    }


def _typo(rng: random.Random, text: str) -> str:
    letters = [i for i, ch in enumerate(text) if ch.isalpha()]
    if len(letters) < 3:
        return text
    i = rng.choice(letters[1:])
    kind = rng.randrange(4)
    if kind == 0:
        return text[:i] + text[i + 1 :]
    if kind == 1:
        return text[:i] + rng.choice(string.ascii_lowercase) + text[i:]
    if kind == 2:
        return text[:i] + rng.choice(string.ascii_lowercase) + text[i + 1 :]
    if i + 1 < len(text) and text[i + 1].isalpha():
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text[:i] + text[i + 1 :]


def _phone(rng: random.Random, country: str) -> str:
    code, prefix, digits = _PHONE_FORMATS[country]
    return code + prefix + "".join(rng.choice(string.digits) for _ in range(digits))


def _write_phone(rng: random.Random, e164: str, country: str) -> str:
    code = _PHONE_FORMATS[country][0]
    national = e164[len(code) :]
    style = rng.randrange(4)
    if style == 0:
        return e164
    if style == 1:
        return f"{code} {national[:3]}-{national[3:]}"
    if style == 2 and country not in {"QA"}:
        return "0" + national  # national trunk prefix
    return f"00{code[1:]} {national}"


def _identifier(rng: random.Random, letters: int, digits: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(letters)) + "".join(
        rng.choice(string.digits) for _ in range(digits)
    )


def _id_typo(rng: random.Random, number: str) -> str:
    i = rng.randrange(len(number))
    if rng.random() < 0.5 and i + 1 < len(number):
        return number[:i] + number[i + 1] + number[i] + number[i + 2 :]
    return number[:i] + rng.choice(string.digits) + number[i + 1 :]


# Persons ------------------------------------------------------------------------------------


def _noisy_person_name(rng: random.Random, tokens: list[str]) -> str:
    written = list(tokens)
    written = [
        rng.choice(_VARIANT_OF[t]) if t in _VARIANT_OF and rng.random() < 0.25 else t
        for t in written
    ]
    if len(written) == 3 and rng.random() < 0.15:
        del written[1]
    if len(written) >= 2 and rng.random() < 0.05:
        written[0] = written[0][0] + "."
    if rng.random() < 0.12:
        k = rng.randrange(len(written))
        written[k] = _typo(rng, written[k])
    if rng.random() < 0.15:
        written = [written[-1], *written[:-1]]
    name = " ".join(written)
    if rng.random() < 0.05:
        name = rng.choice(["Mr. ", "Mrs. ", "Ms. "]) + name
    if rng.random() < 0.2:
        name = name.upper()
    return name


def _noisy_dob(rng: random.Random, dob: date, missing: float) -> date | None:
    roll = rng.random()
    if roll < missing:
        return None
    roll = rng.random()
    if roll < 0.04 and dob.day <= 12:
        return dob.replace(day=dob.month, month=dob.day)
    if roll < 0.08:
        return dob.replace(year=dob.year + rng.choice((-1, 1)))
    if roll < 0.11:
        return dob.replace(day=rng.randint(1, 28))
    if roll < 0.13:
        return date(rng.randint(1970, 2004), rng.randint(1, 12), rng.randint(1, 28))
    return dob


Profile = Literal["v1", "v2", "v3"]
PROFILES: tuple[Profile, ...] = ("v3", "v2", "v1")  # the headline first, then the harder ones
# Zipf exponent of name popularity, and the share of reports without a date of birth.
_NAME_EXPONENT = {"v1": 0.9, "v2": 0.9, "v3": 0.5}
_DOB_MISSING = {"v1": 0.2, "v2": 0.2, "v3": 0.1}


def person_dataset(
    seed: int, workers: int, profile: Profile = "v2"
) -> tuple[list[PersonRecord], dict[str, str]]:
    """Report-level person records and the true worker id of each record (see the module
    docstring for the two noise profiles)."""
    rng = random.Random(seed)
    records: list[PersonRecord] = []
    truth: dict[str, str] = {}
    people: list[tuple[str, list[str], date, str, str, str]] = []
    for w in range(workers):
        country = rng.choice(list(_CORRIDORS))
        pools = _name_pools(country, profile)
        exponent = _NAME_EXPONENT[profile]
        tokens = [_zipf_choice(rng, pools["given"], exponent)]
        if rng.random() < 0.45:
            tokens.append(_zipf_choice(rng, pools["middle"], exponent))
        tokens.append(_zipf_choice(rng, pools["surname"], exponent))
        dob = date(rng.randint(1970, 2004), rng.randint(1, 12), rng.randint(1, 28))
        district = rng.choice(pools["district"])
        people.append((f"w{seed}-{w}", tokens, dob, district, _phone(rng, country), country))
        if rng.random() < 0.05:  # a household member sharing surname, district and phone
            relative = [_zipf_choice(rng, pools["given"], exponent), tokens[-1]]
            other_dob = date(rng.randint(1970, 2004), rng.randint(1, 12), rng.randint(1, 28))
            people.append((f"w{seed}-{w}h", relative, other_dob, district, people[-1][4], country))
    for worker_id, tokens, dob, district, phone, country in people:
        passport = _identifier(rng, 1 if country != "PH" else 2, 7)
        copies = 1 + min(3, int(rng.expovariate(1.0)))
        # v1: every report omits the passport or the phone independently. v2: whether there is
        # a passport number or a phone to give is mostly the worker's (a passport held by the
        # employer is missing from every report), with the same share per report as v1.
        passport_rate, phone_rate = 0.45, 0.6
        if profile != "v1":
            passport_rate = 0.75 if rng.random() < 0.6 else 0.0
            phone_rate = 0.8 if rng.random() < 0.75 else 0.0
        for c in range(copies):
            numbers: tuple[str, ...] = ()
            if rng.random() < passport_rate:
                roll = rng.random()
                number = passport
                if roll < 0.05:
                    number = _id_typo(rng, passport)
                elif roll < 0.08:
                    number = _identifier(rng, 1, 7)
                numbers = (number,)
            phones: tuple[str, ...] = ()
            if rng.random() < phone_rate:
                current = phone if rng.random() > 0.15 else _phone(rng, country)
                phones = (_write_phone(rng, current, country),)
            written_district: str | None = district
            if rng.random() < 0.3:
                written_district = None
            elif rng.random() < 0.1:
                written_district = _typo(rng, district)
            record_id = f"{worker_id}-r{c}"
            records.append(
                PersonRecord(
                    id=record_id,
                    name=_noisy_person_name(rng, tokens),
                    dob=_noisy_dob(rng, dob, _DOB_MISSING[profile]),
                    id_numbers=numbers,
                    phones=phones,
                    home_district=written_district,
                    country=country,
                )
            )
            truth[record_id] = worker_id
    rng.shuffle(records)
    return records, truth


# Entities -----------------------------------------------------------------------------------

_ORG_WORDS = {
    "NP": _words(
        "Sunkoshi Trishuli Bagmati Narayani Mahakali Karnali Manaslu Langtang Machhapuchhre Kanchenjunga Himal Dolpa Mustang Tansen Bhairahawa Birgunj Itahari Dhankuta Ilam Palpa Gulmi Baglung Jumla Rolpa Salyan Surkhet Dailekh Achham Bajura "
        "Everest Himalayan Sagarmatha Lumbini Kantipur Annapurna Gorkha Janakpur Pokhara "
        "Makalu Mount Shikhar Bhrikuti Koshi Gandaki Nilgiri Tilicho Rara Phewa Dhaulagiri"
    ),
    "BD": _words(
        "Dhaka Chittagong Khulna Rajshahi Mymensingh Gazipur Narayanganj Bogra Jessore Pabna Kushtia Dinajpur Madaripur Shariatpur Bhola Patuakhali Feni Lakshmipur Habiganj Moulvibazar Sunamganj Netrokona Jamalpur Sherpur Sirajganj Natore Naogaon Joypurhat "
        "Bengal Padma Meghna Jamuna Sonar Bangla Rupsha Karnaphuli Sylhet Shapla Nakshi Surma "
        "Teesta Barisal Sundarban Rangpur"
    ),
    "ID": _words(
        "Sumber Rezeki Berkah Makmur Indah Timur Barat Sakti Utama Bersama Harapan Wijaya Kencana Buana Persada Prima Mitra Citra Surya Bumi Raya Agung Bahari Tunas Andalan Dinamika Insani "
        "Maju Jaya Sinar Abadi Sejahtera Mandiri Bintang Nusantara Karya Mulia Cahaya "
        "Putra Sentosa Gemilang Perkasa Lestari"
    ),
    "PH": _words(
        "Bicol Ilocos Tagalog Cordillera Samar Negros Panay Bohol Palawan Batanes Marinduque Romblon Aurora Quezon Rizal Laguna Tarlac Zambales Isabela Cagayan Masbate Sorsogon Albay Camarines Antique Capiz Aklan Guimaras Siquijor "
        "Pinoy Bayanihan Luzon Visayas Mindanao Maharlika Sampaguita Perlas Bagong "
        "Tanglaw Kalayaan Magiting"
    ),
    "IN": _words(
        "Bharat Hind Sagarika Kalpana Sundaram Venkatesh Balaji Ashirwad Shanti Pragati Unnati Samruddhi Anand Mangal Shubh Siddhi Vinayak Gokul Mathura Kashi Ujjain Nashik Madurai Tirupati Guruvayur Sabari "
        "Ganga Vishal Shree Sai Lakshmi Kerala Malabar Deccan Sagar Navrang Jyoti Kaveri "
        "Narmada Vaishno"
    ),
    "QA": _words(
        "Wakra Khor Rayyan Sadd Mirqab Shaheen Najma Bidda Corniche Zubara Furjan Waha Hilal Sadaf Yasmeen Riyadh Burj Majd Fajr Barakah Thuraya Nakheel Jazeera Sahara Emirates Qamar Shams "
        "Al Noor Madina Khaleej Doha Pearl Falcon Desert Rose Gulf Star Oasis Dana Lusail"
    ),
    "MY": _words(
        "Mutiara Seri Bayu Gading Putra Indah Jaya Makmur Sinar Teguh Bersatu Cemerlang Murni Setia Berjaya Wangsa Damai Kota Pantai Bukit Sungai Tanjung Kuala Pulau Lembah Selatan Utara Kinabalu Melaka "
        "Harapan Gemilang Cahaya Bumi Mega Intan Permata Wawasan Jati Sutera Kencana"
    ),
    "TH": _words(
        "Chonburi Rayong Samut Sakhon Songkhla Phuket Krabi Chiang Mai Khon Kaen Udon Nakhon Pathom Ratchaburi Kanchanaburi Petchaburi Hua Hin Pattaya Sriracha Bangpakong Chachoengsao Prachin Saraburi Lopburi Suphan Ubon Surin Buriram "
        "Siam Chao Phraya Lanna Thai Rattana Sukhothai Ayutthaya Mekong Isan"
    ),
}
_FILLERS = {
    "NP": ["Overseas", "Manpower", "Human Resources", "Recruitment", "Overseas Employment"],
    "BD": ["Overseas", "International", "Recruiting Agency", "Manpower Services"],
    "ID": ["Karya Utama", "Tenaga Kerja", "Mandiri"],
    "PH": ["International Manpower Services", "Manpower Agency", "Recruitment Agency"],
    "IN": ["Consultants", "Manpower Consultants", "Overseas", "Human Resources"],
    "QA": ["Trading", "Trading & Contracting", "Services", "Contracting"],
    "MY": ["Manufacturing", "Services", "Industries", "Plantation"],
    "TH": ["Seafood", "Trading", "Industries", "Food"],
}
_SUFFIXES = {
    "NP": ["Pvt. Ltd.", "Private Limited", "(P) Ltd", "Pvt Ltd"],
    "BD": ["Ltd.", "Limited"],
    "ID": ["PT"],
    "PH": ["Inc.", "Corp.", "Corporation", "Inc"],
    "IN": ["Pvt. Ltd.", "Private Limited", "Pvt Ltd"],
    "QA": ["W.L.L.", "WLL", "LLC", "L.L.C."],
    "MY": ["Sdn. Bhd.", "Sdn Bhd", "SDN BHD"],
    "TH": ["Co., Ltd.", "Company Limited", "Co. Ltd"],
}
_NATIVE = {
    "QA": ("{name} ذ.م.م", "ar"),
    "TH": ("บริษัท {name} จำกัด", "th"),
    "NP": ("{name} प्रा. लि.", "ne"),
}
_SCRIPT_WORDS = {
    "ar": {"Al": "ال", "Noor": "نور", "Madina": "مدينة", "Khaleej": "خليج", "Trading": "للتجارة"},
    "th": {"Siam": "สยาม", "Thai": "ไทย", "Seafood": "ซีฟู้ด"},
    "ne": {"Everest": "एभरेस्ट", "Himalayan": "हिमालयन", "Overseas": "ओभरसीज"},
}


# Profile v3's registry vocabulary: the words above stay the most popular, followed by a long
# tail of made-up words (syllables of the corridor's languages), drawn with Zipf popularity.
_TAIL_WORDS = 500
_ORG_WORD_EXPONENT = 0.5
_SYLLABLES = _words(
    "ka ki ku ko ra ri ru ro ma mi mu mo na ni nu no sa si su so ta ti tu to la li lu lo "
    "ba bi bu bo da di du do ga gi gu go ha hi hu ja ji ju pa pi pu ya yu wa wi an ar in ur"
)
_org_vocabulary_cache: dict[str, list[str]] = {}


def _org_vocabulary(country: str) -> list[str]:
    """v3: the country's words above, then made-up words (the same for every seed)."""
    if country in _org_vocabulary_cache:
        return _org_vocabulary_cache[country]
    words = list(_ORG_WORDS[country])
    taken = {w.lower() for w in words}
    rng = random.Random(f"org-words-{country}")
    while len(words) < len(_ORG_WORDS[country]) + _TAIL_WORDS:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
        if word.lower() not in taken:
            taken.add(word.lower())
            words.append(word)
    _org_vocabulary_cache[country] = words
    return words


def _org_parts(rng: random.Random, country: str, profile: Profile = "v2") -> tuple[list[str], str]:
    if profile == "v3":
        words = _org_vocabulary(country)
        count = 1 if rng.random() < 0.35 else 2
        distinctive: list[str] = []
        while len(distinctive) < count:
            word = _zipf_choice(rng, words, _ORG_WORD_EXPONENT)
            if word not in distinctive:
                distinctive.append(word)
    else:
        distinctive = rng.sample(_ORG_WORDS[country], 1 if rng.random() < 0.35 else 2)
    filler = rng.choice(_FILLERS[country]) if rng.random() < 0.8 else ""
    return distinctive, filler


def _legal_name(country: str, distinctive: list[str], filler: str, suffix: str) -> str:
    core = " ".join([*distinctive, filler]).strip()
    return f"PT {core}" if suffix == "PT" else f"{core} {suffix}"


def noisy_org_name(rng: random.Random, entity: EntityRecord, parts: tuple[list[str], str]) -> str:
    """A name for `entity` as a monitor or a worker would write it."""
    if entity.aliases and rng.random() < 0.05:
        return rng.choice(entity.aliases)
    country = entity.country or "NP"
    distinctive, filler = list(parts[0]), parts[1]
    roll = rng.random()
    if roll < 0.1 and filler:
        filler = ""
    elif roll < 0.2:
        filler = rng.choice(_FILLERS[country])
    if rng.random() < 0.05 and len(distinctive) == 2:
        distinctive.reverse()
    roll = rng.random()
    suffix = "" if roll < 0.4 else rng.choice(_SUFFIXES[country]) if roll < 0.7 else ""
    if roll >= 0.7:
        suffix = _SUFFIXES[country][0]
    name = (
        _legal_name(country, distinctive, filler, suffix).strip()
        if suffix
        else " ".join([*distinctive, filler]).strip()
    )
    if rng.random() < 0.1:
        name = name.replace("Manpower", "Man Power") if "Manpower" in name else name
    if rng.random() < 0.15:
        name = _typo(rng, name)
    if rng.random() < 0.3:
        name = name.upper()
    return name


def _native_alias(country: str, distinctive: list[str], filler: str) -> str | None:
    if country not in _NATIVE:
        return None
    template, script = _NATIVE[country]
    words = _SCRIPT_WORDS[script]
    written = [words.get(w) for w in [*distinctive, filler] if w]
    if not all(written):
        return None
    return template.format(name=" ".join(w for w in written if w))


def _entity(
    rng: random.Random, entity_id: str, profile: Profile = "v2"
) -> tuple[EntityRecord, tuple[list[str], str]]:
    country = rng.choice(list(_ORG_WORDS))
    distinctive, filler = _org_parts(rng, country, profile)
    kind = "employer" if country in {"QA", "MY", "TH"} else "agency"
    if kind == "agency" and rng.random() < 0.1:
        kind = "sub_agent"  # unlicensed broker: a person's name, a phone, no licence
        pools = _CORRIDORS.get(country, _CORRIDORS["NP"])
        distinctive, filler = [rng.choice(pools["given"]), rng.choice(pools["surname"])], ""
        legal = " ".join(distinctive)
    else:
        legal = _legal_name(country, distinctive, filler, rng.choice(_SUFFIXES[country]))
    alias = _native_alias(country, distinctive, filler)
    licence = (
        ()
        if kind == "sub_agent"
        else (f"{country}-{rng.randint(100, 99999)}/{rng.randint(60, 80)}",)
    )
    record = EntityRecord(
        id=entity_id,
        kind=kind,  # type: ignore[arg-type]
        legal_name=legal,
        aliases=(alias,) if alias else (),
        licence_numbers=licence,
        phones=tuple(_phone(rng, country) for _ in range(rng.randint(1, 2))),
        country=country,
    )
    return record, (distinctive, filler)


def entity_dataset(
    seed: int, registry_size: int, mentions: int, profile: Profile = "v2"
) -> tuple[list[EntityRecord], list[EntityRecord], dict[str, str | None]]:
    """Registry entities, free-text mentions, and the registry id each mention refers to
    (None for entities that are not in the registry; see the module docstring for the two
    noise profiles)."""
    rng = random.Random(seed)
    registry: list[EntityRecord] = []
    parts: list[tuple[list[str], str]] = []
    seen: set[tuple[str, str]] = set()
    while len(registry) < registry_size:
        # Distinct registry entries have distinct names within a country (sharing words is fine).
        entity, entity_parts = _entity(rng, f"e{seed}-{len(registry)}", profile)
        name_key = (entity.country or "", " ".join([*entity_parts[0], entity_parts[1]]))
        if name_key in seen:
            continue
        seen.add(name_key)
        registry.append(entity)
        parts.append(entity_parts)
    outsiders: list[tuple[EntityRecord, tuple[list[str], str]]] = []
    while len(outsiders) < max(1, mentions // 5):
        outsider, outsider_parts = _entity(rng, f"x{seed}-{len(outsiders)}", profile)
        name_key = (outsider.country or "", " ".join([*outsider_parts[0], outsider_parts[1]]))
        # v2: an entity outside the registry does not carry the exact name of a registered
        # one of its country (the registry refuses names already taken); v1 let it, and at
        # full size a third of the outsiders were exact namesakes of registered entities.
        if profile != "v1" and name_key in seen:
            continue
        outsiders.append((outsider, outsider_parts))
    mention_records: list[EntityRecord] = []
    truth: dict[str, str | None] = {}
    for m in range(mentions):
        if rng.random() < 0.2:
            entity, entity_parts = rng.choice(outsiders)
            target = None
        else:
            k = rng.randrange(registry_size)
            entity, entity_parts, target = registry[k], parts[k], registry[k].id
        country = entity.country or "NP"
        phones: tuple[str, ...] = ()
        if rng.random() < 0.35:
            phones = (_write_phone(rng, rng.choice(entity.phones), country),)
        licences: tuple[str, ...] = ()
        if entity.licence_numbers and rng.random() < 0.25:
            licence = entity.licence_numbers[0]
            licences = (_id_typo(rng, licence) if rng.random() < 0.1 else licence.lower(),)
        mention_id = f"m{seed}-{m}"
        mention_records.append(
            EntityRecord(
                id=mention_id,
                kind="mention",
                legal_name=noisy_org_name(rng, entity, entity_parts),
                licence_numbers=licences,
                phones=phones,
                country=country if rng.random() < 0.7 else None,
            )
        )
        truth[mention_id] = target
    return registry, mention_records, truth


# Incidents ----------------------------------------------------------------------------------

_SITES = {  # city centres where sites are scattered (lat, lon, spread in degrees)
    "QA": (25.20, 51.45, 0.12),
    "MY": (3.05, 101.55, 0.2),
    "AE": (25.15, 55.25, 0.15),
    "SA": (24.70, 46.70, 0.2),
    "TH": (13.55, 100.27, 0.15),
}
_CATEGORIES = _words(
    "recruitment_fees withholding_of_wages retention_of_identity_documents debt_bondage "
    "restriction_of_movement intimidation_and_threats abusive_living_conditions "
    "excessive_overtime deception no_written_contract physical_violence retaliation"
)
_WORDS = [f"w{i}" for i in range(400)]


def incident_dataset(
    seed: int, incidents: int, sites: int | None = None, days: int = 365
) -> tuple[list[IncidentRecord], dict[str, str]]:
    """Incident reports and the true incident of each report."""
    rng = random.Random(seed)
    site_count = sites or max(20, incidents // 15)
    site_list = []
    for s in range(site_count):
        country = rng.choice(list(_SITES))
        lat, lon, spread = _SITES[country]
        employer, parts = _entity(rng, f"site{seed}-{s}")
        site_list.append(
            (
                lat + rng.uniform(-spread, spread),
                lon + rng.uniform(-spread, spread),
                employer,
                parts,
            )
        )
    start = datetime(2024, 1, 1, tzinfo=UTC)
    monitors = [f"mon{seed}-{i}" for i in range(max(10, incidents // 20))]
    records: list[IncidentRecord] = []
    truth: dict[str, str] = {}
    for i in range(incidents):
        lat, lon, employer, parts = rng.choice(site_list)
        when = start + timedelta(minutes=rng.randrange(days * 24 * 60))
        categories = rng.sample(_CATEGORIES, rng.randint(1, 3))
        keywords = rng.sample(_WORDS, 6)
        first_monitor = rng.choice(monitors)
        copies = 1 + min(2, int(rng.expovariate(1.2)))
        for c in range(copies):
            occurred = when
            roll = rng.random()
            if roll >= 0.4:
                occurred = when + timedelta(hours=rng.gauss(0, 4))
            if roll >= 0.8:
                occurred = occurred.replace(hour=0, minute=0, second=0, microsecond=0)
            metres = 120.0 if rng.random() > 0.1 else 600.0
            dlat = rng.gauss(0, metres) / 111_000
            dlon = rng.gauss(0, metres) / (111_000 * math.cos(math.radians(lat)))
            cats = list(categories)
            if rng.random() < 0.3:
                if len(cats) > 1 and rng.random() < 0.5:
                    cats.pop()
                else:
                    cats.append(rng.choice(_CATEGORIES))
            narrative = [w for w in keywords if rng.random() < 0.6] + rng.sample(_WORDS, 2)
            monitor = first_monitor if c == 0 or rng.random() < 0.2 else rng.choice(monitors)
            use_id = rng.random() < 0.5
            report_id = f"i{seed}-{i}-r{c}"
            cell_only = rng.random() < 0.1
            records.append(
                IncidentRecord(
                    id=report_id,
                    occurred_at=occurred,
                    lat=None if cell_only else lat + dlat,
                    lon=None if cell_only else lon + dlon,
                    h3_cell=_cell(lat + dlat, lon + dlon) if cell_only else None,
                    categories=tuple(sorted(set(cats))),
                    employer_ids=(employer.id,) if use_id else (),
                    employer_names=() if use_id else (noisy_org_name(rng, employer, parts),),
                    narrative_tokens=tuple(narrative),
                    monitor_id=monitor,
                )
            )
            truth[report_id] = f"i{seed}-{i}"
    rng.shuffle(records)
    return records, truth


def _cell(lat: float, lon: float) -> str:
    import h3

    return str(h3.latlng_to_cell(lat, lon, 9))
